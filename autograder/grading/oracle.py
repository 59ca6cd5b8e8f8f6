"""Stage 4: hidden pytest suites run in the trusted process; the submission is only an oracle.

This module is a pytest plugin. Tests receive a `submission` fixture; `submission.f(args)` sends the
arguments to the sandbox and returns its result decoded with the restricted loader, so every
comparison happens here, where the student's code cannot reach (no frame peeking, no patched
`assert_close`, no `__eq__` tricks, no `os._exit` that ends the test run).

Each test's outcome becomes a `TestResult`: passed, failed (the submission is wrong, raised, crashed,
called a forbidden API), timeout, error (the test itself broke: a grader bug) or needs-gpu.

Run a suite against one notebook by hand:
    pytest grader_tests/01_intro -p autograder.grading.oracle --submission samples/01_intro/correct.ipynb
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from autograder.grading import testing, timings, warm, wire
from autograder.grading.devices import cuda_available
from autograder.course.config import Assignment, load_course
from autograder.grading.extraction import Extracted, extract
from autograder.course.gradebook import TestResult
from autograder.grading.isolation import WallsMissing
from autograder.grading.sandbox import Sandbox, SandboxDied, SandboxSetup, SandboxTimeout, warm_context

# bitsandbytes logs a warning on every import on CPUs with AVX-512 BF16 (an optional kernel package is
# missing); each grading process and sandbox that imports it would repeat it into the TA's terminal.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

MARKERS = {
    "points(n)": "points a passing test earns (required)",
    "question(name)": "the question a test's points count towards",
    "forbidden(*apis)": "library calls the submission must not make in this test",
    "gpu": "needs a CUDA runner; reported as needs-gpu on a CPU grader",
}


# pytest plugins a grading run never uses. unraisableexception alone cost 0.4 s per submission: it runs
# gc.collect() over the worker's whole heap (torch, transformers) when each run ends.
UNUSED_PYTEST_PLUGINS = ("cacheprovider", "terminal", "unraisableexception", "threadexception", "faulthandler",
                         "junitxml", "doctest", "pastebin", "legacypath", "stepwise")

# Starting a sandbox runs the notebook's imports and constants. The first start is not charged to the
# submission's time budget (a cold forkserver's imports happen before this clock starts); a restart
# after a crash, an exit or a timeout is: otherwise a notebook that sleeps at top level and ends the
# process in every call would cost a load timeout per test.
LOAD_TIMEOUT_S = 60.0

# A function that ran out of time in this many calls in a row is not called again for this submission:
# an endless loop costs two call timeouts, not one per test. A call that finishes resets the count, so
# a slow function that finishes within the limit on other inputs loses nothing.
TIMEOUTS_BEFORE_GIVING_UP = 2


class SubmissionError(Exception):
    """The student's code raised; carries the exception's type names for `submission.raises`."""

    def __init__(self, message: str, type_name: str = "", mro: tuple[str, ...] = ()):
        super().__init__(message)
        self.type_name, self.mro = type_name, mro


class StudentFault(Exception):
    """The submission is at fault in a way that is not an exception of its own code."""


class GraderFault(Exception):
    """The grader's own code failed (in the sandbox, or by restarting it): a grader error, never the
    student's fault."""


def _describe_error(reply: dict, label: str) -> Exception:
    kind = reply.get("kind")
    if kind == "missing":
        return StudentFault(f"`{reply.get('name')}` is not defined in your notebook")
    if kind == "forbidden":
        return StudentFault(f"`{label}` called `{reply.get('api')}`, which this task asks you to implement yourself")
    if kind == "tampered":
        return StudentFault(f"`{label}` disabled {reply.get('api')}; this check counts as failed")
    if kind == "lost":
        return StudentFault(f"`{label}`: {reply.get('message')}")
    where = reply.get("where") or []
    location = f" (at {where[-1]})" if where else ""
    if kind == "exit":
        return SubmissionError(f"`{label}` called sys.exit(){location}", "SystemExit", ("SystemExit",))
    type_name = str(reply.get("type", "Exception"))
    return SubmissionError(f"`{label}` raised {type_name}: {reply.get('message', '')}{location}",
                           type_name, tuple(reply.get("mro", ())))


class Handle:
    """An object that lives in the sandbox (a student's module, a custom result).

    Calls, method calls and attribute reads go to the sandbox. A handle never compares equal to
    anything but itself, whatever the student's class defines.
    """

    __slots__ = ("_session", "_handle_ref", "_generation", "remote_type", "_label")

    def __init__(self, session: "GradingSession", ref: wire.HandleRef, generation: int, label: str):
        self._session, self._handle_ref, self._generation = session, ref, generation
        self.remote_type, self._label = ref.type_name, label

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._session.request(self, "getattr", f"{self._label}.{name}", attr=name)

    def __call__(self, *args, **kwargs):
        return self._session.request(self, "call", f"{self._label}(...)", args=args, kwargs=kwargs)

    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<{self.remote_type} object from the submission>"


@dataclass
class RecordedRequest:
    """A call or attribute read the suite made of the notebook's code, kept for `mutants` to replay in
    order. Handles are ids in one sandbox's table: `returned` (the ids of the handles the reply held, in
    `wire.walk` order) and `generation` let a replay map them to the objects its own sandbox returns."""

    label: str
    payload: bytes
    generation: int
    returned: list[int] = field(default_factory=list)


@dataclass
class GradingSession:
    """One submission graded by one suite: owns the sandbox, restarts it after a death."""

    assignment: Assignment
    code: Extracted
    isolate: bool = True
    trace: Path | None = None
    user_namespace: bool = False
    forbidden_all: set = field(default_factory=set)
    forbidden_now: tuple = ()
    results: list = field(default_factory=list)
    load_warnings: list = field(default_factory=list)
    isolation: dict = field(default_factory=dict)
    sandbox_start_s: list = field(default_factory=list)
    used_s: float = 0.0
    generation: int = 0
    fed_recorders: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    calls: list | None = None  # a RecordedRequest of each request the suite makes, for `mutants` to replay
    input_recorders: list = field(default_factory=list)  # `submission.changed_inputs()` blocks now open

    def __post_init__(self):
        self._ctx = None
        # Loading the same code fails the same way again: later tests fail at once instead of
        # paying for a new sandbox (and another load timeout) each.
        self._load_failure: Exception | None = None
        self._sandbox: Sandbox | None = None
        self._workdir: str | None = None
        self._timeouts_in_a_row: dict[str, int] = {}
        self._ended_by_grader: set[int] = set()  # generations of sandboxes dropped for the grader's own error
        self._inputs_after = None  # the arguments' tensors after the last call, where it was asked for

    def _ensure_sandbox(self) -> Sandbox:
        """Tripwires are armed before student code loads (it may bind `from x import f` early), so a
        sandbox armed without an API this call forbids is replaced."""
        self.forbidden_all.update(self.forbidden_now)
        armed = self._sandbox is not None and set(self.forbidden_now) <= set(self._sandbox.setup.forbidden)
        if armed and self._sandbox.alive:
            return self._sandbox
        if self._load_failure is not None:
            raise self._load_failure
        load_timeout = max(self.assignment.limits.call_timeout_s, LOAD_TIMEOUT_S)
        # A restart after the grader's own error is not the submission's time.
        restart = self.generation > 0 and self.generation not in self._ended_by_grader
        budget = self._budget_left() if restart else load_timeout
        self._drop_sandbox()
        self._workdir = tempfile.mkdtemp(prefix="autograder-sandbox-")
        setup = SandboxSetup(self.code, self._workdir, tuple(sorted(self.forbidden_all)),
                             self.assignment.limits.memory_mb, self.isolate, (str(self.assignment.root),),
                             self.user_namespace)
        if self._ctx is None:
            # The forkserver starts with the first sandbox, after collection: it can preload the
            # libraries whose APIs are forbidden (the tripwires import them) once for all sandboxes.
            self._ctx = warm_context(self.assignment, sorted({warm.root_package(api) for api in self.forbidden_all}))
        sandbox = Sandbox(setup, self._ctx)
        self.generation += 1
        begin = time.perf_counter()
        try:
            sandbox.start(min(load_timeout, budget))
        except SandboxTimeout:
            if budget < load_timeout:
                raise SandboxTimeout(self._budget_spent("reloading your notebook after your code crashed, exited "
                                                        "or timed out")) from None
            self._load_failure = SandboxTimeout(
                f"loading your notebook did not finish within {load_timeout:g} s (an endless loop at top level?)")
            raise self._load_failure from None
        except (SandboxDied, WallsMissing) as exc:
            self._load_failure = exc
            raise
        finally:
            if restart:
                self.used_s += time.perf_counter() - begin
        self.sandbox_start_s.append(sandbox.started_s)
        self.load_warnings = sandbox.warnings
        self.isolation = sandbox.report
        self._sandbox = sandbox
        return sandbox

    def _budget_spent(self, doing: str = "") -> str:
        return (f"the submission used its whole time budget ({self.assignment.limits.submission_timeout_s:g} s)"
                f"{' ' + doing if doing else ''}; later checks are not run")

    def _budget_left(self) -> float:
        left = self.assignment.limits.submission_timeout_s - self.used_s
        if left <= 0:
            raise SandboxTimeout(self._budget_spent())
        return left

    def _time_left(self) -> float:
        return min(self._budget_left(), self.assignment.limits.call_timeout_s)

    def request(self, target, op: str, label: str, attr: str | None = None, args=(), kwargs=None):
        held = [target] if isinstance(target, Handle) else []
        wire.walk([args, kwargs or {}], lambda leaf: held.append(leaf) if isinstance(leaf, Handle) else None)
        for handle in held:
            if handle._generation in self._ended_by_grader:
                raise GraderFault(f"`{label}`: an object your code returned earlier was lost when the grader "
                                  "restarted the sandbox after an error of its own")
            if handle._generation != self.generation:
                raise StudentFault(f"`{label}`: this object was lost when your code crashed in an earlier call")
        if self._timeouts_in_a_row.get(label, 0) >= TIMEOUTS_BEFORE_GIVING_UP:
            raise SandboxTimeout(f"`{label}` was not run: it did not finish in its last {TIMEOUTS_BEFORE_GIVING_UP} "
                                 f"calls ({self.assignment.limits.call_timeout_s:g} s each)")
        echo = bool(self.input_recorders) and op == "call"
        payload = wire.encode_arguments({
            "op": op, "target": target._handle_ref if isinstance(target, Handle) else target, "attr": attr,
            "args": list(args), "kwargs": dict(kwargs or {}), "forbidden": sorted(self.forbidden_now),
            **({"echo_inputs": True} if echo else {}),
        })
        record = None
        if self.calls is not None:
            record = RecordedRequest(label, payload, self.generation)
            self.calls.append(record)
        before = wire.input_tensors(list(args), dict(kwargs or {})) if echo else None
        value = self.send(payload, label, retry=not held)
        if record is not None:
            record.generation = self.generation
            wire.walk(value, lambda leaf: record.returned.append(leaf._handle_ref.id) if isinstance(leaf, Handle) else None)
        for recorder in self.input_recorders if echo else ():
            recorder.record(label, before, self._inputs_after)
        return value

    def send(self, payload: bytes, label: str, retry: bool = True):
        """Send an encoded request (a call the suite made, or its replay) and decode the reply.

        A request the grader's own code failed to answer is sent once more to a fresh sandbox, where
        `retry` allows it: a request that holds objects of this sandbox cannot move (nor be repeated
        without changing them) and is reported at once."""
        sandbox = self._ensure_sandbox()
        if self.trace is not None:  # read by the scheduler if this worker dies during the call
            self.trace.write_text(label)
        begin, data, stages = time.perf_counter(), None, timings.current()
        timeout = self._time_left()
        try:
            data = sandbox.request(payload, timeout, f"while running `{label}`")
            self._timeouts_in_a_row.pop(label, None)
        except SandboxTimeout:
            self._drop_sandbox()
            self._timeouts_in_a_row[label] = self._timeouts_in_a_row.get(label, 0) + 1
            raise SandboxTimeout(f"`{label}` did not finish within {timeout:g} s (an endless loop?)") from None
        except SandboxDied as exc:
            self._drop_sandbox()
            locked = sorted({warm.root_package(api) for api in self.forbidden_now} & set(sandbox.native_locked))
            if exc.exitcode == -signal.SIGSEGV and locked:
                raise StudentFault(f"`{label}` crashed (SIGSEGV) running the native code of {locked[0]}, which "
                                   "is locked while this check runs: this task asks you to implement it "
                                   "yourself") from None
            raise
        finally:
            round_trip = time.perf_counter() - begin
            self.used_s += round_trip
            if data is None:  # an endless loop or a crash: the student's time
                stages.add("student's calls (sandbox)", round_trip)
        try:
            with stages.timed("result decoding"):
                reply = wire.decode_message(data, lambda ref: Handle(self, ref, self.generation, ref.type_name))
        except wire.WireError as exc:
            raise StudentFault(f"`{label}`: {exc}") from None
        in_sandbox = timings.reported(reply.get("call_s") if isinstance(reply, dict) else None, round_trip)
        stages.add("student's calls (sandbox)", in_sandbox)
        stages.add("call transport", round_trip - in_sandbox)
        if not isinstance(reply, dict) or "ok" not in reply:
            raise StudentFault(f"`{label}`: the sandbox answered in an unexpected format")
        if not reply["ok"] and reply.get("kind") == "grader":
            if not retry:
                raise GraderFault(f"`{label}`: the grader failed inside the sandbox ({reply.get('message')})")
            self._ended_by_grader.add(self.generation)
            self._drop_sandbox()
            return self.send(payload, label, retry=False)
        if not reply["ok"]:
            raise _describe_error(reply, label)
        self._inputs_after = reply.get("inputs_after")
        for setting in reply.get("numerics_changed", []):
            note = f"`{label}` changed {setting}; the grader reset it (graded functions should leave it alone)"
            if note not in self.notes:
                self.notes.append(note)
        fed, batches = reply.get("fed_tokens", []), reply.get("fed_batches", [])
        for recorder in self.fed_recorders:
            recorder.per_call.extend(int(n) for n in fed if isinstance(n, int))
            recorder.batch_sizes.extend(int(n) for n in batches if isinstance(n, int))
        return reply.get("value")

    def _drop_sandbox(self) -> None:
        if self._sandbox is not None:
            self._sandbox.kill()
            self._sandbox = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def close(self) -> None:
        self._drop_sandbox()


@dataclass(eq=False)  # a block's recorder is removed by identity, never by equal counts
class FedTokens:
    per_call: list = field(default_factory=list)
    batch_sizes: list = field(default_factory=list)


@dataclass
class ChangedInputs:
    per_call: list = field(default_factory=list)  # (call label, [where each changed tensor sits])

    def record(self, label: str, before: dict, after) -> None:
        """A tensor the sandbox did not report back counts as changed: the reply is the student's to shape."""
        after = after if isinstance(after, dict) else {}
        self.per_call.append((label, [where for where, tensor in before.items() if not _same_tensor(tensor, after.get(where))]))


def _same_tensor(a: torch.Tensor, b) -> bool:
    if type(b) is not torch.Tensor or (a.shape, a.dtype, a.device) != (b.shape, b.dtype, b.device):
        return False
    return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])) \
        if a.is_floating_point() else bool(torch.equal(a, b))


@contextlib.contextmanager
def _recording(recorders: list, record):
    """`record` receives what the session observes while the block runs (the calls' recorders)."""
    recorders.append(record)
    try:
        yield record
    finally:
        recorders.remove(record)


class SubmissionProxy:
    """What a hidden test sees as `submission`: attribute access names a notebook function."""

    def __init__(self, session: GradingSession):
        self._session = session

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        session = self._session

        def call(*args, **kwargs):
            return session.request(name, "call", name, args=args, kwargs=kwargs)

        call.__name__ = name
        return call

    def fed_tokens(self):
        """Count the token positions zoo models embed during the calls in this block:
        `fed.per_call` holds one number per forward call (e.g. to tell a KV cache from re-feeding),
        `fed.batch_sizes` the batch size of each call (e.g. to tell one batch from a loop over prompts)."""
        return _recording(self._session.fed_recorders, FedTokens())

    def changed_inputs(self):
        """Which arguments the calls in this block changed in place: `changed.per_call` holds, per call, the
        tensors (`args[0]`, `args[1].weight` of a module, `kwargs['x']`) whose shape, dtype or values
        differ afterwards from what the test passed; compared here, in the grader."""
        return _recording(self._session.input_recorders, ChangedInputs())

    @contextlib.contextmanager
    def raises(self, expected: type[BaseException]):
        """Expect the student's code to raise `expected` (or a subclass of it)."""
        try:
            yield
        except SubmissionError as err:
            if expected.__name__ in err.mro:
                return
            raise AssertionError(f"expected {expected.__name__}, but {err}") from None
        raise AssertionError(f"expected your code to raise {expected.__name__}, but it returned normally")


_FAILED = (AssertionError, SubmissionError, StudentFault, SandboxDied)
_UNPACKING = re.compile(r"values to unpack|cannot unpack non-iterable")


def _classify(item, excinfo) -> tuple[str, str]:
    if excinfo is None:
        return "passed", ""
    exc = excinfo.value
    if isinstance(exc, SandboxTimeout):
        return "timeout", str(exc)
    if isinstance(exc, _FAILED):
        message = str(exc).strip()
        if type(exc) is AssertionError:
            # A bare `assert` in a hidden test: its expression is hidden test source, never shown.
            message = "" if message.startswith("assert ") else message.split("\n")[0]
        if not message:
            doc = (item.function.__doc__ or "").strip().splitlines()
            message = f"check failed: {doc[0]}" if doc else "a check of your result failed"
        return "failed", message
    if isinstance(exc, GraderFault):
        return "error", f"grader error in this test: {exc}; please tell the course staff"
    if isinstance(exc, (ValueError, TypeError)) and _UNPACKING.search(str(exc)):
        # `q, scale = submission.f(x)` on a result of another shape: the submission's fault (verify
        # proves the suite unpacks the solution's results), not a grader error.
        return "failed", (f"your function's result could not be unpacked into the values the task names ({exc}); "
                          "return exactly those values, as a tuple in the order the task gives")
    return "error", f"grader error in this test ({type(exc).__name__}: {exc}); please tell the course staff"


class ValueOnlyReports:
    """A grading run's reports of failed tests hold the exception's value, not pytest's traceback with
    the source of every frame (about 15 ms per failed test). Nobody prints a grading run's reports, and
    the verdict and its message come from the exception itself. (`--tb=value` would say so, but it
    belongs to the terminal plugin, which grading runs without; a suite run by hand keeps both.)"""

    def pytest_configure(self, config):
        config.option.tbstyle = "value"


class OraclePlugin:
    """Registered with pytest for one submission; collects a `TestResult` per test."""

    def __init__(self, session: GradingSession, cuda_available: bool):
        self.session = session
        self.cuda_available = cuda_available
        self.marks: dict[str, float] = {}  # when collection, the tests and the wrap-up began

    def pytest_configure(self, config):
        for marker, doc in MARKERS.items():
            config.addinivalue_line("markers", f"{marker}: {doc}")
        testing.configure(self.session.assignment.tolerances)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection(self, session):
        self.marks["collection"] = time.perf_counter()
        yield
        self.marks["tests"] = time.perf_counter()

    def pytest_sessionfinish(self, session):
        self.marks["wrap-up"] = time.perf_counter()

    def pytest_collection_modifyitems(self, items):
        for item in items:
            for marker in item.iter_markers("forbidden"):
                self.session.forbidden_all.update(marker.args)

    @pytest.fixture
    def submission(self, request):
        self.session.forbidden_now = tuple(a for m in request.node.iter_markers("forbidden") for a in m.args)
        self.session.notes = []
        return SubmissionProxy(self.session)

    def pytest_runtest_setup(self, item):
        if item.get_closest_marker("points") is None:
            raise pytest.UsageError(f"{item.nodeid} has no @pytest.mark.points(n)")
        if item.get_closest_marker("gpu") and not self.cuda_available:
            pytest.skip("needs GPU runner")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when == "setup" and report.passed:
            return
        if call.when == "teardown":
            return
        points_marker = item.get_closest_marker("points")
        possible = float(points_marker.args[0]) if points_marker else 0.0
        question_marker = item.get_closest_marker("question")
        question = question_marker.args[0] if question_marker else item.module.__name__.removeprefix("test_")
        if report.skipped and item.get_closest_marker("gpu"):
            status, message = "needs-gpu", "needs a GPU runner; not graded on this machine"
        elif report.skipped:
            status, message = "error", f"test skipped: {report.longrepr[-1] if report.longrepr else ''}"
        else:
            status, message = _classify(item, call.excinfo)
        message = " ".join(filter(None, [message, *self.session.notes]))
        self.session.notes = []
        self.session.results.append(TestResult(
            test_id=item.nodeid, question=question, status=status,
            points_earned=possible if status == "passed" else 0.0, points_possible=possible,
            message=message, duration_s=round(report.duration, 4),
        ))


# The suite whose modules this process holds: its folder and each file's (path, mtime, size).
_loaded_suite: tuple[Path, tuple] | None = None


def _forget_other_suites(tests_dir: Path) -> None:
    """pytest imports a suite's modules under their bare names (`test_attention`, `transformer_references`)
    and keeps them for the next run, which makes collection cheap for a worker's next submission. A
    process that then runs another suite, or this one edited (verify and mutants of several assignments,
    a by-hand run), must not find the first one's modules under those names: they are dropped."""
    global _loaded_suite
    files = []
    for path in sorted(tests_dir.rglob("*.py")):
        stat = path.stat()  # once per file: this runs before every submission a worker grades
        files.append((str(path), stat.st_mtime_ns, stat.st_size))
    files = tuple(files)
    if _loaded_suite is not None and _loaded_suite != (tests_dir, files):
        old_dir = _loaded_suite[0]
        for name, module in list(sys.modules.items()):
            location = getattr(module, "__file__", None)
            if location and Path(location).is_relative_to(old_dir):
                del sys.modules[name]
        with contextlib.suppress(ValueError):
            sys.path.remove(str(old_dir))
    _loaded_suite = (tests_dir, files)


# Stages timed inside the hidden tests; what is left of the tests' time is their own code.
_INSIDE_TESTS = ("sandbox fork", "isolation set-up", "notebook load (sandbox)", "student's calls (sandbox)",
                 "call transport", "result decoding", "comparisons", "reference values")


def _add_pytest_stages(stages: timings.Stages, marks: dict, begin: float, end: float, inside_before: float) -> None:
    collection, tests, wrap_up = (marks.get(k) for k in ("collection", "tests", "wrap-up"))
    if None in (collection, tests, wrap_up):  # pytest stopped early: all of it is its start-up
        stages.add("pytest start-up", end - begin)
        return
    stages.add("pytest start-up", collection - begin)
    stages.add("pytest collection", tests - collection)
    inside = sum(stages.get(name, 0.0) for name in _INSIDE_TESTS) - inside_before
    stages.add("hidden tests' own code", wrap_up - tests - inside)
    stages.add("pytest wrap-up", end - wrap_up)


def run_suite(assignment: Assignment, code: Extracted, isolate: bool = True, trace: Path | None = None,
              only_gpu: bool = False, calls: list | None = None) -> GradingSession:
    """Run the assignment's hidden suite against extracted code; returns the filled session.
    `trace` names a file that always holds the call in progress (for a post-mortem of this process);
    `only_gpu` runs just the GPU-marked tests (completing a grade a CPU grader left incomplete);
    `calls`, when given, receives every request the suite makes of the notebook's code (RecordedRequest)."""
    session = GradingSession(assignment, code, isolate, trace, calls=calls)
    plugin = OraclePlugin(session, cuda_available())
    # No ini file: the course's own pytest settings (the framework's tests) must not leak in. Nor a
    # conftest.py above the suite; and without --confcutdir pytest 9 lists every folder above it
    # (all of /tmp, say) at each run.
    # Nor the pytest plugins that happen to be installed on the grading machine (anyio's, say): a
    # grade must not depend on them, and finding and loading them was a third of pytest's start-up.
    args = [str(assignment.tests_dir), "-c", os.devnull, "--rootdir", str(assignment.tests_dir),
            "--confcutdir", str(assignment.tests_dir), "--disable-plugin-autoload",
            *(arg for plugin in UNUSED_PYTEST_PLUGINS for arg in ("-p", f"no:{plugin}")),
            "--assert=plain", "-W", "ignore"]
    if only_gpu:
        args += ["-m", "gpu"]
    stages = timings.current()
    inside_tests = sum(stages.get(name, 0.0) for name in _INSIDE_TESTS)
    begin = time.perf_counter()
    _forget_other_suites(assignment.tests_dir)
    try:
        with contextlib.redirect_stdout(None):
            exit_code = pytest.main(args, plugins=[plugin, ValueOnlyReports()])
    finally:
        session.close()
        _add_pytest_stages(stages, plugin.marks, begin, time.perf_counter(), inside_tests)
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise RuntimeError(f"the hidden suite of {assignment.id} could not run (pytest exit code {int(exit_code)})")
    if isinstance(session._load_failure, WallsMissing):  # a grader failure, not a grade: a rerun retries it
        raise session._load_failure
    return session


# --- `pytest grader_tests/<a> -p autograder.grading.oracle --submission NOTEBOOK` ---------------------------


def pytest_addoption(parser):
    group = parser.getgroup("autograder")
    group.addoption("--submission", help="grade this notebook against the suite (runs it in a sandbox)")
    group.addoption("--assignment", help="assignment id (default: the name of the suite's folder)")


def pytest_configure(config):
    notebook = config.getoption("submission", None)
    if not notebook or config.pluginmanager.has_plugin("autograder-oracle-session"):
        return
    course = load_course()
    assignment_id = config.getoption("assignment") or Path(config.args[0]).resolve().name
    assignment = course.get(assignment_id)
    session = GradingSession(assignment, extract(Path(notebook), assignment.extraction))
    config.pluginmanager.register(OraclePlugin(session, cuda_available()), "autograder-oracle-session")
    config.add_cleanup(session.close)
