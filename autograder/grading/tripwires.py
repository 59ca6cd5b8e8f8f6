"""Forbidden library calls, caught however submission code reaches them.

A hidden test forbids what a task asks students to write themselves, by Python name
(`@pytest.mark.forbidden("torch.nn.functional.scaled_dot_product_attention")`) or by operator pattern
(`"aten::_scaled_dot_product_*"`, `"bitsandbytes::*"`). The same work is reachable many ways, so three
layers watch during a forbidden-marked call:

1. the Python function itself is replaced by a guard (pure-Python APIs: `generate`, bitsandbytes);
2. a `TorchFunctionMode` sees every torch call made from Python: bindings (`torch._C._nn...`), aliases,
   `getattr`/`importlib` lookups and `torch.ops.<ns>.<op>` packets and overloads;
3. a `TorchDispatchMode` sees every operator that reaches the dispatcher, also from C++: the backend
   kernels of the same operation (math, flash, efficient attention).

A call counts as the student's when submission code (`<cell N>`) is on the stack above it and no
grader-provided model's module sits between the two: a zoo model's own forward may use SDPA; the
student's code, or a library helper it calls directly, may not. A violation is remembered even if
student code swallows the exception. Removing the modes during a call counts as one, and so does
switching them off or popping them for a while from submission code; a thread started during the call
is watched too (the mode stacks are per thread). These checks live in the sandbox's own process, so
code that digs out the originals (closures, a forked child, ctypes) can still get past them: they
catch the shortcuts a student finds, the verdicts are safe regardless.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
import sys

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._python_dispatch import TorchDispatchMode

# Other kernels of one operation, reachable without its public name.
KERNEL_FAMILIES = {
    "torch.nn.functional.scaled_dot_product_attention": (
        "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_*", "aten::_flash_attention_*",
        "aten::_efficient_attention_*", "aten::_fused_sdp_choice",
    ),
}
_OPERATOR_NAMESPACES = {"torch": "aten", "bitsandbytes": "bitsandbytes"}
# Ways to take torch calls out of the modes' sight within one call, ending with the modes back in place:
# switching them off, popping them for a while. Called from submission code during a watched call,
# they count as removing the checks. (Called from torch's own code, they are torch's business.)
_MODE_ESCAPES = (
    ("torch._C", "DisableTorchFunction"), ("torch._C", "_DisableTorchDispatch"),
    ("torch._C", "_pop_torch_function_stack"), ("torch._C", "_pop_torch_dispatch_stack"),
    ("torch.overrides", "_pop_mode"), ("torch.overrides", "_pop_mode_temporarily"),
    ("torch.utils._python_dispatch", "_pop_mode"), ("torch.utils._python_dispatch", "_pop_mode_temporarily"),
    ("torch.utils._python_dispatch", "_disable_current_modes"),
)
# The mode stacks are per thread: a thread started during a watched call gets modes of its own.
_THREAD_STARTS = (("_thread", "start_new_thread"), ("_thread", "start_joinable_thread"),
                  ("threading", "_start_new_thread"), ("threading", "_start_joinable_thread"))
TAMPERED = "the grader's checks for forbidden calls (a torch function or dispatch mode was removed)"


class ForbiddenCall(BaseException):
    """Raised into student code; a BaseException so a bare `except Exception` does not hide it."""


def _resolve(dotted: str):
    """(owner, attribute name, object) for a dotted name, or None when it does not exist here."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    else:
        return None
    for attr in parts[cut:-1]:
        owner = getattr(owner, attr, None)
        if owner is None:
            return None
    original = inspect.getattr_static(owner, parts[-1], None)
    return None if original is None else (owner, parts[-1], original)


def operator_patterns(api: str) -> tuple[str, ...]:
    """The operator names an API is known under: given patterns, `ns::name` and its kernel family."""
    if "::" in api:
        return (api,)
    namespace = _OPERATOR_NAMESPACES.get(api.split(".")[0])
    own = (f"{namespace}::{api.rsplit('.', 1)[-1]}",) if namespace else ()
    return own + KERNEL_FAMILIES.get(api, ())


def _operator_name(func) -> str | None:
    if isinstance(func, torch._ops.OpOverload):
        return func._schema.name
    if isinstance(func, torch._ops.OpOverloadPacket):
        return func._qualified_op_name
    return None


class Tripwires:
    """Armed once per sandbox, before student code loads (it may bind `from x import f` early);
    `watch(...)` activates a set of forbidden APIs for one call."""

    def __init__(self, apis):
        self.active: frozenset[str] = frozenset()
        self.violations: list[str] = []
        self._patterns: list[tuple[str, str]] = []  # (pattern, api) of the active APIs
        self._objects: dict[int, str] = {}  # id of a forbidden callable -> api, for the active APIs
        self._known_objects: dict[str, object] = {}
        self._allowed_modules: set[int] = set()
        self._verdicts: dict[object, str | None] = {}
        self._modes_watching = False
        for api in apis:
            self._arm(api)
        self._guard_mode_escapes()

    def _guard_mode_escapes(self) -> None:
        """Replace the `_MODE_ESCAPES` and `_THREAD_STARTS` where submission code finds them."""
        tripwires, torch_dir = self, torch.__file__.rsplit("/", 1)[0] + "/"

        def escape(original):
            def guarded(*args, **kwargs):
                caller = sys._getframe(1)
                if (tripwires._modes_watching and not caller.f_code.co_filename.startswith(torch_dir)
                        and tripwires.from_submission(caller)):
                    tripwires.violations.append(TAMPERED)
                    raise ForbiddenCall(TAMPERED)
                return original(*args, **kwargs)
            return guarded

        def start(original):
            def watched(function, *args, **kwargs):
                if tripwires._modes_watching:
                    function = tripwires._watched_in_thread(function)
                return original(function, *args, **kwargs)
            return watched

        for targets, wrap in ((_MODE_ESCAPES, escape), (_THREAD_STARTS, start)):
            for module_name, name in targets:
                module = importlib.import_module(module_name)
                original = getattr(module, name, None)
                if original is not None:
                    setattr(module, name, wrap(original))

    def _watched_in_thread(self, function):
        def run(*args, **kwargs):
            with _FunctionMode(self), _DispatchMode(self):
                return function(*args, **kwargs)
        return run

    def _arm(self, api: str) -> None:
        found = None if "::" in api else _resolve(api)
        if found is None:
            return
        owner, name, original = found
        target = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        if not inspect.isfunction(target):
            self._known_objects[api] = target  # builtins and C bindings: the torch modes see them
            return
        tripwires = self

        def guarded(*args, **kwargs):
            if api in tripwires.active and tripwires.from_submission(sys._getframe(1)):
                tripwires.violations.append(api)
                raise ForbiddenCall(api)
            return target(*args, **kwargs)

        guarded.__name__, guarded.__qualname__, guarded.__doc__ = target.__name__, target.__qualname__, target.__doc__
        guarded.__wrapped__ = target
        if isinstance(original, (staticmethod, classmethod)):
            guarded = type(original)(guarded)
        setattr(owner, name, guarded)

    def from_submission(self, frame) -> bool:
        """Submission code is on the stack, and no module of a grader-provided model lies in between."""
        while frame is not None:
            if frame.f_code.co_filename.startswith("<cell "):
                return True
            if id(frame.f_locals.get("self")) in self._allowed_modules:
                return False
            frame = frame.f_back
        return False

    def match(self, func) -> str | None:
        """The active API a torch callable or operator belongs to, if any (cached per callable)."""
        try:
            return self._verdicts[func]
        except (KeyError, TypeError):
            pass
        verdict = self._objects.get(id(func))
        name = _operator_name(func)
        if verdict is None and name is None and callable(func):
            dotted = resolve_name(func)
            verdict = dotted if dotted in self.active else None
            name = f"aten::{getattr(func, '__name__', '')}" if dotted else None
        if verdict is None and name is not None:
            verdict = next((api for pattern, api in self._patterns if fnmatch.fnmatchcase(name, pattern)), None)
        with contextlib.suppress(TypeError):
            self._verdicts[func] = verdict
        return verdict

    def check(self, func, frame) -> None:
        api = self.match(func)
        if api is not None and self.from_submission(frame):
            self.violations.append(api)
            raise ForbiddenCall(api)

    @contextlib.contextmanager
    def watch(self, forbidden, models=()):
        """Forbid `forbidden` during the block; `models` (and their submodules) may use anything."""
        self.active, self.violations = frozenset(forbidden), []
        self._patterns = [(p, api) for api in self.active for p in operator_patterns(api)]
        self._objects = {id(self._known_objects[api]): api for api in self.active if api in self._known_objects}
        self._allowed_modules = {id(m) for model in models for m in model.modules()}
        self._verdicts = {}
        # Only for APIs the modes can see: they put every torch call through Python (about 10x on a
        # loop-heavy function), which a pure-Python API, guarded by name, does not need.
        modes = [_FunctionMode(self), _DispatchMode(self)] if self._patterns or self._objects else []
        entered = []
        try:
            for mode in modes:
                mode.__enter__()
                entered.append(mode)
            self._modes_watching = bool(entered)
            yield
        finally:
            self.active, self._modes_watching = frozenset(), False
            if entered and not _modes_in_place(entered):
                self.violations.append(TAMPERED)
            for mode in reversed(entered):
                with contextlib.suppress(Exception):  # student code popped or replaced the mode
                    mode.__exit__(None, None, None)


def _modes_in_place(modes) -> bool:
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    stacks = _get_current_function_mode_stack() + _get_current_dispatch_mode_stack()
    return all(any(mode is m for m in stacks) for mode in modes)


class _Watching:
    """What both modes do: check the callable, then run it unchanged."""

    def __init__(self, tripwires: Tripwires):
        super().__init__()
        self.tripwires = tripwires

    def _run(self, func, args, kwargs):
        self.tripwires.check(func, sys._getframe(2))
        return func(*args, **(kwargs or {}))


class _FunctionMode(_Watching, TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)


class _DispatchMode(_Watching, TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)
