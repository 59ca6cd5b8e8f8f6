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
CUDA_CHECKS: set[Callable] = set()  # checks that run only where torch sees a GPU
GPU = "cuda"  # the device CUDA checks move their inputs to


def public_check(task: str, cuda: bool = False):
    """Register a check for `task`; its parameter names are notebook globals it needs. A `cuda` check runs
    where a GPU is present (the course machines), so the promise that graded functions work on CUDA is
    checked where students can keep it, and a laptop's report does not list it."""

    def register(fn: Callable) -> Callable:
        REGISTERED[task].append(fn)
        if cuda:
            CUDA_CHECKS.add(fn)
        return fn

    return register


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


def to_gpu(value):
    """A GPU copy of a check's argument or result: tensors moved, modules copied and moved, a device
    replaced by the GPU, a fresh CPU generator by a GPU one with its seed; containers walked."""
    import copy

    import torch

    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to(GPU)
    if isinstance(value, torch.Tensor):
        return value.to(GPU)
    if isinstance(value, torch.device):
        return torch.device(GPU)
    if isinstance(value, torch.Generator):
        return torch.Generator(device=GPU).manual_seed(value.initial_seed())
    if isinstance(value, (list, tuple)):
        return type(value)(to_gpu(v) for v in value)
    if isinstance(value, dict):
        return {k: to_gpu(v) for k, v in value.items()}
    return value


def same_on_gpu(fn: Callable, *args, what: str, **kwargs) -> None:
    """`fn` on GPU copies of its arguments returns what it returns on the CPU, on the GPU."""
    expected = fn(*args, **kwargs)
    actual = fn(*to_gpu(args), **to_gpu(kwargs))
    _same(actual, expected, f"{what} on {GPU} inputs (results belong on the input's device)")


def _same(actual, expected, what: str) -> None:
    from autograder.grading.testing import assert_close, assert_same_text

    if isinstance(expected, str):
        assert_same_text(actual, expected, what=what)
    elif isinstance(expected, list) and all(isinstance(e, str) for e in expected):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{what}: expected {len(expected)} texts"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_text(a, e, what=f"{what}[{i}]")
    else:
        assert_close(actual, to_gpu(expected), what=what)


def run_checks(task: str, namespace: dict) -> list[tuple[str, bool, str]]:
    """Run the checks of `task` against `namespace`; returns (check name, passed, message) rows."""
    if task not in REGISTERED:
        known = ", ".join(sorted(REGISTERED)) or "none"
        return [(task, False, f"no public checks are registered for {task!r} (known: {known})")]
    rows = []
    for fn in REGISTERED[task]:
        if fn in CUDA_CHECKS and not gpu_present():
            continue
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
    waiting = 0 if gpu_present() else sum(fn in CUDA_CHECKS for fn in REGISTERED.get(task, ()))
    print(f"{task}: {passed}/{len(rows)} public checks passed"
          + (f" ({waiting} more run{'s' if waiting == 1 else ''} on a GPU, where one is present)" if waiting else ""))
    for name, ok, message in rows:
        print(f"  {'✓' if ok else '✗'} {name}" + ("" if ok else f": {message}"))
    return passed == len(rows)
