"""Public checks: what a student runs in the notebook, right after a task, for quick feedback.

They run in the student's own kernel against the notebook's functions and print a readable verdict
instead of a traceback. They are advisory; grades come only from the hidden suites.
"""

from __future__ import annotations

import inspect
import sys
from collections import defaultdict
from typing import Callable

REGISTERED: dict[str, list[Callable]] = defaultdict(list)  # task -> its public checks (read by `validate`)


def public_check(task: str):
    """Register a check for `task`; its parameter names are notebook globals it needs."""

    def register(fn: Callable) -> Callable:
        REGISTERED[task].append(fn)
        return fn

    return register


def run_checks(task: str, namespace: dict) -> list[tuple[str, bool, str]]:
    """Run the checks of `task` against `namespace`; returns (check name, passed, message) rows."""
    if task not in REGISTERED:
        known = ", ".join(sorted(REGISTERED)) or "none"
        return [(task, False, f"no public checks are registered for {task!r} (known: {known})")]
    rows = []
    for fn in REGISTERED[task]:
        name = fn.__name__.replace("_", " ")
        needed = list(inspect.signature(fn).parameters)
        missing = [n for n in needed if n not in namespace]
        if missing:
            rows.append((name, False, f"`{missing[0]}` is not defined yet - run the cell where you define it"))
            continue
        try:
            fn(*(namespace[n] for n in needed))
        except NotImplementedError:
            rows.append((name, False, "not implemented yet"))
        except AssertionError as exc:
            rows.append((name, False, str(exc) or "a check failed"))
        except Exception as exc:  # the student's code raised: show it as a message
            rows.append((name, False, f"your code raised {type(exc).__name__}: {exc}"))
        else:
            rows.append((name, True, ""))
    return rows


def check(task: str) -> bool:
    """Run the public checks of `task` against the caller's (the notebook's) globals and print them."""
    namespace = sys._getframe(1).f_globals
    rows = run_checks(task, namespace)
    passed = sum(ok for _, ok, _ in rows)
    print(f"{task}: {passed}/{len(rows)} public checks passed")
    for name, ok, message in rows:
        print(f"  {'✓' if ok else '✗'} {name}" + ("" if ok else f": {message}"))
    return passed == len(rows)
