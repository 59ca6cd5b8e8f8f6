"""Stage 3: submission code runs in its own process, isolated from the grader.

A sandbox is forked from a warm forkserver that has already imported torch and transformers (never
CUDA), so it starts in milliseconds. Before any student code runs, the child isolates itself with
Linux namespaces, as root or as an unprivileged user (through a user namespace):

- network: a new, empty network namespace (no interfaces but a down loopback);
- processes: a new PID namespace (it cannot see or signal the grader) with its own /proc;
- files: every mount is re-mounted read-only; the course's `grader_tests/` and `source/`, the
  gradebook and all submissions are hidden under empty mounts; the private working directory (also
  HOME and TMPDIR) is a fresh size-limited tmpfs;
- privileges: all capabilities dropped and `no_new_privs` set, so none of this can be undone;
- resources: address-space and file-size limits; the grader enforces wall-clock timeouts per call.

Where the kernel refuses namespaces the sandbox still runs (process separation alone keeps verdicts
safe) and reports what it could not enforce; the grader records that with the submission.

The child then executes the extracted statements one by one and serves calls from the grader:
arguments and results cross in the restricted format of `autograder.wire`.
"""

from __future__ import annotations

import builtins
import ctypes
import linecache
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field

from autograder import wire
from autograder.extraction import Extracted

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
_LOCKED_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                 "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
_PSEUDO_FS_ROOTS = ("/proc", "/sys", "/dev")
WORKDIR_SIZE = "256m"
MAX_MESSAGE_CHARS = 4000

_libc = ctypes.CDLL(None, use_errno=True)

# Numerics the grader pins around every call, with how to read and set each one.
_NUMERICS = {
    "torch.backends.cuda.matmul.allow_tf32": (
        lambda t: t.backends.cuda.matmul.allow_tf32, lambda t: setattr(t.backends.cuda.matmul, "allow_tf32", False)),
    "torch.backends.cudnn.allow_tf32": (
        lambda t: t.backends.cudnn.allow_tf32, lambda t: setattr(t.backends.cudnn, "allow_tf32", False)),
    "torch.get_float32_matmul_precision()": (
        lambda t: t.get_float32_matmul_precision(), lambda t: t.set_float32_matmul_precision("highest")),
    "torch.are_deterministic_algorithms_enabled()": (
        lambda t: t.are_deterministic_algorithms_enabled(), lambda t: t.use_deterministic_algorithms(True, warn_only=True)),
    "torch.get_default_dtype()": (lambda t: t.get_default_dtype(), lambda t: t.set_default_dtype(t.float32)),
}


@dataclass(frozen=True)
class SandboxSetup:
    """What a sandbox needs to start: the code, the tripwires to arm, what to hide, its limits."""

    code: Extracted
    workdir: str
    forbidden: tuple[str, ...] = ()
    masked_paths: tuple[str, ...] = ()
    memory_mb: int = 4096
    isolate: bool = True


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


class Tripwires:
    """Replace forbidden library functions by wrappers that refuse calls coming from the submission.

    A call counts as the student's when the nearest calling frame outside torch, transformers and
    bitsandbytes belongs to submission code, so library internals (a model's own forward) stay free.
    A violation is remembered even if the student's code swallows the exception.
    """

    class ForbiddenCall(BaseException):
        pass

    def __init__(self, names):
        self.active: frozenset[str] = frozenset()
        self.violations: list[str] = []
        self._library_roots = tuple(
            os.path.dirname(m.__file__) for m in map(sys.modules.get, ("torch", "transformers", "bitsandbytes"))
            if m is not None and getattr(m, "__file__", None)
        )
        for name in names:
            self._arm(name)

    def _arm(self, dotted: str) -> None:
        import importlib
        import inspect

        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                owner = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        else:
            return
        for attr in parts[cut:-1]:
            owner = getattr(owner, attr, None)
            if owner is None:
                return
        original = inspect.getattr_static(owner, parts[-1], None)
        if original is None:
            return
        target = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        tripwires = self

        def guarded(*args, **kwargs):
            if dotted in tripwires.active and tripwires._called_by_submission():
                tripwires.violations.append(dotted)
                raise Tripwires.ForbiddenCall(dotted)
            return target(*args, **kwargs)

        guarded.__name__, guarded.__qualname__, guarded.__doc__ = target.__name__, target.__qualname__, target.__doc__
        if isinstance(original, (staticmethod, classmethod)):
            guarded = type(original)(guarded)
        setattr(owner, parts[-1], guarded)

    def _called_by_submission(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith(self._library_roots) and filename != __file__:
                return filename.startswith("<cell ")
            frame = frame.f_back
        return False


# --- isolation (child side) -----------------------------------------------------------------------


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _enter_namespaces() -> str:
    """New mount, network and PID namespaces; through a user namespace when not root."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(flags) == 0:
        return "namespaces"
    _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")
    return "user namespaces"


def _mount_points() -> list[tuple[str, int]]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            path = fields[4].replace("\\040", " ")
            flags = sum(_LOCKED_FLAGS.get(opt, 0) for opt in fields[5].split(","))
            points.append((path, flags))
    return points


def _lock_down_files(setup: SandboxSetup) -> list[str]:
    """Read-only everything, hide the secrets, give the child a private writable tmpfs."""
    problems = []
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", setup.workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={WORKDIR_SIZE},mode=0700")
    for path, flags in sorted(_mount_points()):
        if path.startswith(_PSEUDO_FS_ROOTS) or path == setup.workdir:
            continue
        try:
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as exc:
            if path == "/":
                raise
            problems.append(str(exc))
    for path in setup.masked_paths:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    return problems


def _drop_privileges() -> None:
    """No capabilities (so no remount, unmount or ptrace), and no way to regain any."""
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")


def _become_pid_one() -> None:
    """Fork into the new PID namespace; the outer process only mirrors the inner one's fate."""
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _isolate(setup: SandboxSetup) -> dict[str, str]:
    report = {}
    if setup.isolate:
        try:
            report["namespaces"] = _enter_namespaces()
            _become_pid_one()
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            problems = _lock_down_files(setup)
            report["files"] = "read-only; secrets hidden" + (f" ({len(problems)} mounts left writable)" if problems else "")
            report["network"] = "none"
            _drop_privileges()
            report["privileges"] = "dropped"
        except OSError as exc:
            report["isolation"] = f"not enforced: {exc}"
    os.chdir(setup.workdir)
    os.environ.clear()
    os.environ.update(
        PATH="/usr/bin:/bin", HOME=setup.workdir, TMPDIR=setup.workdir, LANG="C.UTF-8",
        OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLCONFIGDIR=setup.workdir,
    )
    address_space = _vm_size_bytes() + setup.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return report


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


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
    for _, (_, pin) in _NUMERICS.items():
        pin(torch)
    return {name: read(torch) for name, (read, _) in _NUMERICS.items()}


def _serve(conn, namespace: dict, tripwires: Tripwires) -> None:
    import torch

    handles: dict[int, object] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        models: list = []
        try:
            request = wire.decode_arguments(data, handles, models)
        except wire.WireError as exc:
            conn.send_bytes(wire.encode_message(_error_report("lost", message=str(exc))))
            continue
        conn.send_bytes(_answer(request, namespace, handles, tripwires, torch, models))


def _count_fed_tokens(models: list, fed: list[int]) -> None:
    """Record how many positions each forward call of a zoo model embeds: what a hidden test needs to
    tell a real KV cache from a loop that re-feeds the whole sequence (both give the same tokens)."""
    for model in models:
        model.get_input_embeddings().register_forward_pre_hook(lambda module, args: fed.append(int(args[0].shape[-1])))


def _answer(request: dict, namespace: dict, handles: dict, tripwires: Tripwires, torch, models: list) -> bytes:
    fed: list[int] = []
    _count_fed_tokens(models, fed)
    target = request["target"]
    if isinstance(target, str):
        if target not in namespace:
            return wire.encode_message(_error_report("missing", name=target))
        target = namespace[target]
    pinned = _pin_numerics(torch)
    tripwires.active, tripwires.violations = frozenset(request.get("forbidden", ())), []
    try:
        if request["op"] == "getattr":
            value = getattr(target, request["attr"])
        else:
            value = target(*request["args"], **request["kwargs"])
    except BaseException as exc:  # noqa: BLE001 - everything the student raises is a result
        if tripwires.violations:
            return wire.encode_message(_error_report("forbidden", api=tripwires.violations[0]))
        kind = "exit" if isinstance(exc, SystemExit) else "exception"
        return wire.encode_message(_error_report(kind, exc))
    finally:
        tripwires.active = frozenset()
    if tripwires.violations:
        return wire.encode_message(_error_report("forbidden", api=tripwires.violations[0]))
    changed = [name for name, (read, _) in _NUMERICS.items() if read(torch) != pinned[name]]
    if changed:
        return wire.encode_message(_error_report("numerics", settings=changed))
    try:
        return wire.encode_result({"ok": True, "value": value, "fed_tokens": fed}, handles)
    except Exception as exc:  # noqa: BLE001 - e.g. a tensor that cannot be serialised
        return wire.encode_message(_error_report("exception", exc))


def child_main(conn, setup: SandboxSetup) -> None:
    """Entry point of a sandbox process (runs in the forkserver's child)."""
    import torch

    try:
        report = _isolate(setup)
        torch.set_num_threads(1)
        tripwires = Tripwires(setup.forbidden)
        namespace = {"__name__": "__submission__", "__builtins__": builtins}
        warnings = load_statements(setup.code, namespace)
    except BaseException as exc:  # noqa: BLE001
        conn.send_bytes(wire.encode_message({"status": "failed", "message": f"{type(exc).__name__}: {exc}"}))
        os._exit(1)
    conn.send_bytes(wire.encode_message({"status": "ready", "warnings": warnings, "isolation": report}))
    _serve(conn, namespace, tripwires)


# --- the grader's side ----------------------------------------------------------------------------


PRELOAD = ["torch", "transformers", "autograder.sandbox", "autograder.warm"]


def warm_context(extra_modules=()):
    """A forkserver context that preloads the heavy imports once; sandboxes fork from it."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD + [m for m in extra_modules if m not in PRELOAD])
    return ctx


@dataclass
class Sandbox:
    """The grader's handle on one sandbox process."""

    setup: SandboxSetup
    ctx: object
    report: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
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
            raise RuntimeError(f"the sandbox could not start: {hello.get('message')}")
        self.report, self.warnings = hello["isolation"], hello["warnings"]
        self.started_s = time.perf_counter() - begin

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
        if hasattr(self, "process") and self.process.is_alive():
            self.process.kill()
        if hasattr(self, "process"):
            self.process.join(5)
            self._conn.close()

