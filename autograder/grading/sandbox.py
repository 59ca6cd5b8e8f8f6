"""Stage 3: submission code runs in its own process, isolated from the grader.

A sandbox is forked from a warm forkserver that has already imported torch and what the assignment
uses (never CUDA; `autograder.grading.warm`), so it starts in milliseconds. Before any student code runs, the
child builds its walls (`autograder.grading.isolation`: own session, namespaces, a whitelist root, an
unprivileged uid, limits) and arms the forbidden-API checks (`autograder.grading.tripwires`).

The child then executes the extracted statements one by one and serves calls from the grader:
arguments and results cross in the restricted format of `autograder.grading.wire`. Numerics settings are
pinned before every call; a call that changes them is judged as usual and gets a note.
"""

from __future__ import annotations

import builtins
import contextlib
import linecache
import multiprocessing
import operator
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field

from autograder.grading import isolation, timings, warm, wire
from autograder.grading.extraction import Extracted
from autograder.grading.tripwires import TAMPERED, UNLOCKED, Tripwires

MAX_MESSAGE_CHARS = 4000

# Numerics the grader pins around every call, with how to read and set each one. torch keeps float32
# precision in one tree of (backend, operator) settings, written by two APIs: the `fp32_precision`
# attributes and the legacy switches (`allow_tf32`, `set_float32_matmul_precision`). Once a program
# mixes them, the legacy getters raise. The tree is pinned first, then the legacy switches, which leaves
# every getter of both reading the pins back (tests/test_sandbox.py tries every mix of the two).
_FP32_PRECISION = {
    "torch.backends.fp32_precision": ("generic", "all"),
    "torch.backends.cudnn.fp32_precision": ("cuda", "all"),
    "torch.backends.cuda.matmul.fp32_precision": ("cuda", "matmul"),
    "torch.backends.cudnn.conv.fp32_precision": ("cuda", "conv"),
    "torch.backends.cudnn.rnn.fp32_precision": ("cuda", "rnn"),
    "torch.backends.mkldnn.fp32_precision": ("mkldnn", "all"),
    "torch.backends.mkldnn.matmul.fp32_precision": ("mkldnn", "matmul"),
    "torch.backends.mkldnn.conv.fp32_precision": ("mkldnn", "conv"),
    "torch.backends.mkldnn.rnn.fp32_precision": ("mkldnn", "rnn"),
}


def _fp32_precision(backend: str, op: str):
    """Read and pin ("ieee": full float32) one node of the tree. The public attributes reach every node but
    one (`torch.backends.mkldnn.fp32_precision` sets the generic node), so torch's own accessors are used."""
    return (lambda t: t._C._get_fp32_precision_getter(backend, op),
            lambda t: t._C._set_fp32_precision_setter(backend, op, "ieee"))


def _setting(owner: str, name: str, value):
    """Read and pin `torch.<owner>.<name>`."""
    get_owner = operator.attrgetter(owner)
    return lambda t: getattr(get_owner(t), name), lambda t: setattr(get_owner(t), name, value)


_NUMERICS = {
    "torch.backends.cuda.matmul.allow_tf32": _setting("backends.cuda.matmul", "allow_tf32", False),
    "torch.backends.cudnn.allow_tf32": _setting("backends.cudnn", "allow_tf32", False),
    "torch.get_float32_matmul_precision()": (
        lambda t: t.get_float32_matmul_precision(), lambda t: t.set_float32_matmul_precision("highest")),
    # Half-precision reductions on the GPU, at torch's defaults.
    **{f"torch.backends.cuda.matmul.{name}": _setting("backends.cuda.matmul", name, value)
       for name, value in (("allow_fp16_reduced_precision_reduction", True),
                           ("allow_bf16_reduced_precision_reduction", True), ("allow_fp16_accumulation", False))},
    "torch.are_deterministic_algorithms_enabled()": (
        lambda t: t.are_deterministic_algorithms_enabled(), lambda t: _use_deterministic_algorithms(t)),
    "torch.get_default_dtype()": (lambda t: t.get_default_dtype(), lambda t: t.set_default_dtype(t.float32)),
    **{name: _fp32_precision(*node) for name, node in _FP32_PRECISION.items()},
}
_PIN_ORDER = sorted(_NUMERICS, key=lambda name: name not in _FP32_PRECISION)  # the tree first


def _use_deterministic_algorithms(torch) -> None:
    """`torch.use_deterministic_algorithms` also sets the compiler's (inductor's) flag, importing the
    whole compiler to do so: seconds at every forkserver start. Until submission code loads the
    compiler there is only the global flag to set; once it has, the next pin sets both."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class SandboxSetup:
    """What a sandbox needs to start: the code, the tripwires to arm, its limits.

    `workdir` is an empty host directory: the new root is mounted on it inside the sandbox's own
    mount namespace (or, without isolation, it is the working directory). `protected` are host paths
    the sandbox must never be given, even inside a whitelisted directory (the course root)."""

    code: Extracted
    workdir: str
    forbidden: tuple[str, ...] = ()
    memory_mb: int = 4096
    isolate: bool = True
    protected: tuple[str, ...] = ()
    user_namespace: bool = False  # take the unprivileged grader's path even as root
    owner: int = field(default_factory=os.getpid)  # the grading process; the sandbox ends with it


class SandboxDied(Exception):
    def __init__(self, exitcode: int | None, during: str):
        self.exitcode, self.during = exitcode, during
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name
            why = f"was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
        elif exitcode in (None, 0):
            why = "ended the process (sys.exit or os._exit)"
        else:
            why = f"ended the process with exit code {exitcode}"
        super().__init__(f"your code {why} {during}")


class SandboxTimeout(Exception):
    pass


# --- serving calls (child side) -------------------------------------------------------------------


def _safe_text(fn, fallback: str) -> str:
    try:
        return str(fn())[:MAX_MESSAGE_CHARS]
    except BaseException:  # a student's __str__ may itself raise
        return fallback


def _student_frames(tb) -> list[str]:
    return [f"{f.filename[1:-1]}, line {f.lineno}, in {f.name}" for f in traceback.extract_tb(tb)
            if f.filename.startswith("<cell ")]


def _error_report(kind: str, exc: BaseException | None = None, **extra) -> dict:
    report = {"ok": False, "kind": kind, **extra}
    if exc is not None:
        report.update(
            type=type(exc).__name__,
            mro=[c.__name__ for c in type(exc).__mro__],
            message=_safe_text(lambda: exc, "<message could not be shown>"),
            where=_student_frames(exc.__traceback__),
        )
    return report


def load_statements(code: Extracted, namespace: dict) -> list[str]:
    """Run each kept statement on its own; a failing one becomes a warning, not a lost submission."""
    import ast

    warnings = []
    for cell in code.cells:
        lines = cell.source.splitlines(keepends=True)
        linecache.cache[cell.filename] = (len(cell.source), None, lines, cell.filename)
        body = ast.parse(cell.source, filename=cell.filename).body
        for index in cell.keep:
            node = body[index]
            try:
                exec(compile(ast.Module([node], []), cell.filename, "exec"), namespace)
            except BaseException as exc:  # noqa: BLE001 - SystemExit at load must not stop loading
                first = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
                message = _safe_text(lambda error=exc: error, "")
                warnings.append(f"cell {cell.number}, line {node.lineno}: `{first[:60]}` failed while loading "
                                f"your notebook: {type(exc).__name__}: {message}")
    return warnings


def _pin_numerics(torch) -> dict:
    for name in _PIN_ORDER:
        _NUMERICS[name][1](torch)
    return read_numerics(torch)


def read_numerics(torch) -> dict:
    """Every pinned setting as it reads now; a getter that raises (torch's legacy getters do once its
    two APIs are mixed) reads as the error's name, which differs from any pin."""
    values = {}
    for name, (read, _) in _NUMERICS.items():
        try:
            values[name] = read(torch)
        except Exception as exc:  # noqa: BLE001 - what a setting reads as, not a failure
            values[name] = f"unreadable ({type(exc).__name__})"
    return values


def _serve(conn, namespace: dict, tripwires: Tripwires) -> None:
    """Answer the grader's requests until it hangs up. Student code raises only inside `_answer`'s
    guarded call, where it becomes a result; anything else raised here is the grader's own fault, and
    says so instead of ending the process (an exit the grader would blame on the submission)."""
    import torch

    handles: dict[int, object] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        try:
            models: list = []
            try:
                request = wire.decode_arguments(data, handles, models)
            except wire.WireError as exc:
                reply = wire.encode_message(_error_report("lost", message=str(exc)))
            else:
                reply = _answer(request, namespace, handles, tripwires, torch, models)
        except BaseException as exc:  # noqa: BLE001 - the grader's code failed, not the submission
            reply = wire.encode_message(_error_report("grader", message=_safe_text(
                lambda: f"{type(exc).__name__}: {exc}", type(exc).__name__)))
        conn.send_bytes(reply)


def _count_fed_tokens(models: list, fed: list[int], batches: list[int]) -> None:
    """Record how many positions each forward call of a zoo model embeds, and for how many sequences:
    what a hidden test needs to tell a real KV cache from a loop that re-feeds the whole sequence, or
    one batch from a loop over its prompts (each pair gives the same tokens). An input that is not a
    tensor is left to the embedding, which raises the submission's own error."""
    import torch

    def record(module, args, kwargs):
        ids = args[0] if args else kwargs.get("input")
        if isinstance(ids, torch.Tensor):
            fed.append(int(ids.shape[-1]) if ids.dim() else 1)
            batches.append(int(ids.shape[0]) if ids.dim() > 1 else 1)

    for model in models:
        model.get_input_embeddings().register_forward_pre_hook(record, with_kwargs=True)


def _answer(request: dict, namespace: dict, handles: dict, tripwires: Tripwires, torch, models: list) -> bytes:
    fed: list[int] = []
    batches: list[int] = []
    _count_fed_tokens(models, fed, batches)
    target = request["target"]
    if isinstance(target, str):
        if target not in namespace:
            return wire.encode_message(_error_report("missing", name=target))
        target = namespace[target]
    pinned = _pin_numerics(torch)
    begin = time.perf_counter()
    raised = None
    with tripwires.watch(request.get("forbidden", ()), models):
        try:
            if request["op"] == "getattr":
                value = getattr(target, request["attr"])
            else:
                value = target(*request["args"], **request["kwargs"])
        except BaseException as exc:  # noqa: BLE001 - everything the student raises is a result
            raised = exc
        finally:
            isolation.end_strays()
    if tripwires.violations:
        api = tripwires.violations[0]
        return wire.encode_message(_error_report("tampered" if api in (TAMPERED, UNLOCKED) else "forbidden", api=api))
    if raised is not None:
        return wire.encode_message(_error_report("exit" if isinstance(raised, SystemExit) else "exception", raised))
    now = read_numerics(torch)
    changed = [name for name, value in now.items() if value != pinned[name]]
    # asked for by `submission.changed_inputs()`: the grader compares them with what it sent
    after = {"inputs_after": wire.input_tensors(request["args"], request["kwargs"])} if request.get("echo_inputs") else {}
    try:
        return wire.encode_result({"ok": True, "value": value, "fed_tokens": fed, "fed_batches": batches,
                                   "numerics_changed": changed, "call_s": time.perf_counter() - begin, **after},
                                  handles)
    except Exception as exc:  # noqa: BLE001 - e.g. a tensor that cannot be serialised
        return wire.encode_message(_error_report("exception", exc))


def _detach_from_terminal() -> None:
    """The sandbox inherits the TA's terminal as stdin, stdout and stderr. Submission code could read
    the TA's keystrokes from it, and what it prints or warns would land among the progress lines: a
    flood, or escape sequences that rewrite the screen. Nobody reads it there (exceptions and exits
    reach the feedback through the grader), so all three are /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _drop_inherited_channels() -> None:
    """A forkserver's child inherits the write end of the forkserver's "alive" pipe (one byte written
    there stops the forkserver, and with it every later sandbox of the batch) and the resource tracker's
    pipe (the tracker runs outside the walls, prints what it is sent to the TA's terminal and unlinks
    what it is told to). Neither is the sandbox's to use: both are closed before student code runs."""
    from multiprocessing import forkserver, resource_tracker

    for holder, name in ((forkserver._forkserver, "_forkserver_alive_fd"), (resource_tracker._resource_tracker, "_fd")):
        fd = getattr(holder, name, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            setattr(holder, name, None)


def child_main(conn, setup: SandboxSetup) -> None:
    """Entry point of a sandbox process (runs in the forkserver's child)."""
    import torch

    _detach_from_terminal()
    _drop_inherited_channels()
    try:
        begin = time.perf_counter()
        walls = isolation.Walls(setup.workdir, setup.memory_mb, setup.protected, setup.user_namespace, setup.owner)
        report = isolation.isolate(walls, setup.isolate)
        torch.set_num_threads(1)
        tripwires = Tripwires(setup.forbidden)
        walled = time.perf_counter()
        namespace = {"__name__": "__submission__", "__builtins__": builtins}
        warnings = load_statements(setup.code, namespace)
        isolation.end_strays()
        timed = {"isolation_s": walled - begin, "load_s": time.perf_counter() - walled}
    except BaseException as exc:  # noqa: BLE001
        walls = isinstance(exc, isolation.WallsMissing)
        conn.send_bytes(wire.encode_message({"status": "failed", "walls": walls,
                                             "message": str(exc) if walls else f"{type(exc).__name__}: {exc}"}))
        os._exit(1)
    conn.send_bytes(wire.encode_message({"status": "ready", "warnings": warnings, "isolation": report,
                                         "native_locked": tripwires.native_locked, **timed}))
    _serve(conn, namespace, tripwires)


# --- the grader's side ----------------------------------------------------------------------------


def warm_context(assignment, extra_modules=()):
    """A forkserver context whose forkserver preloads what the assignment needs; sandboxes fork from it.

    In a grading worker this is the batch's forkserver, already running (`autograder.grading.warm`); elsewhere
    (a single grading run, verify, a cluster job) a forkserver of this process's own, started with the
    first sandbox. `extra_modules` are the roots of the APIs the collected tests forbid."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(warm.modules_for(assignment, warm.SANDBOX_BASE, extra_modules))
    warm.ensure_forkserver()  # here, not by the first sandbox: with the grader's environment only
    return ctx


@dataclass
class Sandbox:
    """The grader's handle on one sandbox process."""

    setup: SandboxSetup
    ctx: object
    report: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    native_locked: list = field(default_factory=list)  # packages whose native code forbidding calls lock
    started_s: float = 0.0

    def start(self, timeout: float) -> None:
        begin = time.perf_counter()
        self._conn, child_conn = self.ctx.Pipe(duplex=True)
        self.process = self.ctx.Process(target=child_main, args=(child_conn, self.setup), daemon=True)
        self.process.start()
        child_conn.close()
        hello = wire.decode_message(self._receive(timeout, "while loading your notebook"))
        if hello.get("status") != "ready":
            self.kill()
            if hello.get("walls"):
                raise isolation.WallsMissing(hello.get("message"))
            raise RuntimeError(f"the sandbox could not start: {hello.get('message')}")
        self.report, self.warnings, self.native_locked = hello["isolation"], hello["warnings"], hello["native_locked"]
        self.started_s = time.perf_counter() - begin
        stages = timings.current()
        walls = timings.reported(hello.get("isolation_s"), self.started_s)
        load = timings.reported(hello.get("load_s"), self.started_s - walls)
        stages.add("isolation set-up", walls)
        stages.add("notebook load (sandbox)", load)
        stages.add("sandbox fork", self.started_s - walls - load)

    @property
    def alive(self) -> bool:
        return hasattr(self, "process") and self.process.is_alive()

    def request(self, payload: bytes, timeout: float, during: str) -> bytes:
        try:
            self._conn.send_bytes(payload)
        except (BrokenPipeError, OSError):
            raise self._died(during) from None
        return self._receive(timeout, during)

    def _receive(self, timeout: float, during: str) -> bytes:
        if not self._conn.poll(timeout):
            self.kill()
            raise SandboxTimeout(during)
        try:
            return self._conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
        except (EOFError, OSError):
            raise self._died(during) from None

    def _died(self, during: str) -> SandboxDied:
        self.process.join(5)
        code = self.process.exitcode
        self.kill()
        return SandboxDied(code, during)

    def kill(self) -> None:
        """The sandbox leads a session and process group of its own: end the whole group (and with
        its PID namespace's first process, everything inside the namespace)."""
        if hasattr(self, "process") and self.process.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.kill()
        if hasattr(self, "process"):
            self.process.join(5)
            self._conn.close()

