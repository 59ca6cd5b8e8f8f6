"""Where grading time goes, stage by stage (`grade --profile`; `bench/stages.py` prints it as a table).

A grading worker adds the wall time of each stage of one submission to a `Stages`, which travels back
with the submission's result; the `grade` command adds the batch's own stages (its start, the
forkserver, the gradebook writes). A sandbox reports its side (walls, notebook load, the calls' own
time) in its messages: figures from student code, clamped to what the grader measured around them and
used only here, never in a verdict.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time

# Stage name -> what it covers, in the order of the data flow. Per batch: the first three and the last;
# per submission: the others. "hidden tests' own code" is what is left of the suite's run once the
# other stages inside it are taken out: inputs, fixtures, reference code not marked `@reference`.
STAGES = {
    "CLI start": "interpreter start and the CLI's imports, before `main` runs",
    "forkserver start": "the batch's forkserver imports torch, pytest and the grader (until the first worker is up)",
    "worker start": "a worker forked from the forkserver, until its first submission begins",
    "notebook read and extraction": "find and parse the notebook, keep the graded definitions",
    "pytest start-up": "pytest's configuration and plugins, each submission",
    "pytest collection": "import (cached after the first) and collect the hidden tests",
    "sandbox fork": "fork from the forkserver and the hand-shake",
    "isolation set-up": "namespaces, whitelist root, uid, limits (inside the sandbox)",
    "notebook load (sandbox)": "the notebook's imports and definitions run in the sandbox",
    "student's calls (sandbox)": "the graded functions running, as the sandbox timed them",
    "call transport": "arguments encoded and sent, results received: round trip minus the sandbox's time",
    "result decoding": "results decoded with the restricted loader",
    "comparisons": "assert_close and the other checks of `autograder.grading.testing`",
    "reference values": "the suite's `@reference` computations (cached per worker) and their copies",
    "hidden tests' own code": "inputs, fixtures, other reference code: the rest of the suite's run",
    "pytest wrap-up": "pytest's session end",
    "gradebook write": "the result committed to SQLite (in the `grade` process)",
}
BATCH_STAGES = ("CLI start", "forkserver start", "worker start", "gradebook write")


class Stages(dict):
    """Seconds per stage name (names from `STAGES`); `span` is when its submission's grading began and
    ended (wall clock), from which a batch's grading time without its start is read."""

    span: tuple[float, float] | None = None

    def add(self, name: str, seconds: float) -> None:
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}")
        self[name] = self.get(name, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def timed(self, name: str):
        """Time the block; a block of the same stage inside it (a recursive check) is not counted twice."""
        running = self.__dict__.setdefault("_running", set())
        if name in running:
            yield
            return
        running.add(name)
        begin = time.perf_counter()
        try:
            yield
        finally:
            running.discard(name)
            self.add(name, time.perf_counter() - begin)


def timed(name: str):
    """Decorator: the calls of a function count towards stage `name` of the current submission."""
    def wrap(function):
        @functools.wraps(function)
        def timed_function(*args, **kwargs):
            with current().timed(name):
                return function(*args, **kwargs)
        return timed_function
    return wrap


_current: Stages | None = None


def current() -> Stages:
    """The stages of the submission this process is grading (a throw-away one outside grading)."""
    return _current if _current is not None else Stages()


@contextlib.contextmanager
def recording(stages: Stages):
    """Make `stages` the current one while a submission is graded in this process."""
    global _current
    previous, _current = _current, stages
    try:
        yield stages
    finally:
        _current = previous


def summary(per_submission: list[dict]) -> dict[str, float]:
    """Seconds per stage for a batch: the forkserver's start as the first worker saw it, the slowest
    worker's start, and every per-submission stage as its mean over the submissions."""
    values = {}
    for stage in STAGES:
        seen = [stages[stage] for stages in per_submission if stage in stages]
        if stage == "forkserver start":
            values[stage] = min(seen, default=0.0)
        elif stage == "worker start":
            values[stage] = max(seen, default=0.0)
        elif stage != "CLI start":
            values[stage] = sum(seen) / len(per_submission) if per_submission else 0.0
    return values


def per_submission(summarised: dict[str, float]) -> dict[str, float]:
    """The stages of `summary` that each submission pays (the gradebook write among them)."""
    return {k: v for k, v in summarised.items() if k not in BATCH_STAGES or k == "gradebook write"}


def reported(value, at_most: float) -> float:
    """A duration the sandbox reported, as a number between 0 and what the grader measured around it."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return min(max(float(value), 0.0), at_most)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
            return float(uptime.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None
