"""Forbidden library calls, caught however submission code reaches them.

A hidden test forbids what a task asks students to write themselves, by Python name
(`@pytest.mark.forbidden("torch.nn.functional.scaled_dot_product_attention")`) or by operator pattern
(`"aten::_scaled_dot_product_*"`, `"bitsandbytes::*"`). The same work is reachable many ways, so three
layers watch during a forbidden-marked call:

1. a pure-Python API (`generate`, a logits warper, bitsandbytes' helpers) gets its code compiled again
   with a check as its first statement, in place: the function object keeps its name, its decorators
   and everything that refers to it, and the process holds no unchecked copy of its code. Whatever
   reaches it (`inspect.unwrap`, `__wrapped__`, `__func__`, a class's `__dict__`, `gc`, a function
   built on its `__code__`, a copy) runs the check. New copies of that code (reloading or re-importing
   the library's module, compiling or unmarshalling its source, rebuilding a code object with its
   bytecode) are refused by an audit hook (`sys.addaudithook`, which no code can remove) when made;
2. a `TorchFunctionMode` sees every torch call made from Python: bindings (`torch._C._nn...`), aliases,
   `getattr`/`importlib` lookups and `torch.ops.<ns>.<op>` packets and overloads;
3. a `TorchDispatchMode` sees every operator that reaches the dispatcher, also from C++: the backend
   kernels of the same operation (math, flash, efficient attention).

Inside a watched call everything runs for the submission (its own code, whatever file name it was
compiled under, and the library code it calls), except what a grader-provided model does between:
a zoo model's own forward may use SDPA; the student's code, or a library helper it calls directly,
may not. A violation is remembered even if student code swallows the exception. Removing the modes
during a call counts as one, and so does switching them off or popping them for a while from
submission code; a thread started during the call is watched too (the mode stacks are per thread).

A package's own native code (bitsandbytes' kernels, reachable with `ctypes` or through its library
handle) cannot be watched call by call: during a call that forbids any API of a package other than
torch (whose native code runs everything), the executable pages of the package's shared libraries
are locked (`mprotect`, no access). Code that runs them crashes the sandbox with SIGSEGV, which the
grader reports as running the library's native code; loading a copy of such a library is refused.

These checks live in the sandbox's own process, so code that rewrites the interpreter's memory or
the checks' own state can still get past them: they catch the shortcuts a student finds, the
verdicts are safe regardless.
"""

from __future__ import annotations

import __future__
import ast
import contextlib
import ctypes
import dis
import fnmatch
import functools
import glob
import hashlib
import importlib
import importlib.util
import inspect
import marshal
import os
import sys
import textwrap
import types
import warnings

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._python_dispatch import TorchDispatchMode

from autograder.grading.warm import root_package

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
# Compiler flags of `from __future__` imports: a function compiled again keeps its module's.
_FUTURE_FLAGS = functools.reduce(int.__or__, (getattr(__future__, name).compiler_flag
                                              for name in __future__.all_feature_names))
# Audit events that make code objects: the code they make must not hold a forbidden function's code.
_CODE_EVENTS = ("compile", "exec", "marshal.loads", "code.__new__", "ctypes.dlopen")
_SAME_OPERATION = {"LOAD_METHOD": "LOAD_ATTR"}
_JUMPS = frozenset(dis.hasjrel + dis.hasjabs)
# Packages whose native code is never locked: torch's runs every tensor operation.
_NATIVE_CODE_STAYS = frozenset({"torch"})
PROT_NONE, PROT_READ, PROT_EXEC = 0, 1, 4
TAMPERED = "the grader's checks for forbidden calls (a torch function or dispatch mode was removed)"
UNLOCKED = "the grader's lock on a forbidden library's native code"


class ForbiddenCall(BaseException):
    """Raised into student code; a BaseException so a bare `except Exception` does not hide it."""


def _resolve(dotted: str):
    """The object a dotted name stands for (a method as found in its class), or None when it does not
    exist here."""
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
    return inspect.getattr_static(owner, parts[-1], None)


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


def _checked_code(function, check) -> types.CodeType:
    """`function`'s code compiled again from its source with `check()` as its first statement (after
    the docstring); `check` is a constant of the code, not a name a submission could rebind."""
    original = function.__code__
    if original.co_freevars:
        raise ValueError(f"cannot forbid {original.co_qualname}: it uses variables of an enclosing function")
    lines, first_line = inspect.getsourcelines(function)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first_line - 1)
    definition = tree.body[0]
    definition.decorator_list = []  # already applied: the decorated object wraps this very function
    sentinel = f"<check {original.co_qualname}>"
    docstring = int(ast.get_docstring(definition, clean=False) is not None)
    anchor = definition.body[min(docstring, len(definition.body) - 1)]
    check_call = ast.Expr(ast.Call(ast.Constant(sentinel), [], []))
    for node in ast.walk(check_call):
        ast.copy_location(node, anchor)
    definition.body.insert(docstring, check_call)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # "'str' object is not callable": it is replaced below
        module = compile(tree, original.co_filename, "exec", flags=original.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    code = next(const for const in module.co_consts if isinstance(const, types.CodeType))
    consts = tuple(check if isinstance(const, str) and const == sentinel else const for const in code.co_consts)
    return code.replace(co_consts=consts, co_qualname=original.co_qualname)


def _names(code: types.CodeType) -> tuple:
    """A cheap first look at a code object: the names it uses, in order, and its arguments."""
    return code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount


def _steps(code: types.CodeType) -> tuple:
    """What stays the same when a function's source is compiled again elsewhere: its operations and
    what they name. Not its file, lines or name, jump offsets, or how the compiler chose to call a
    method (`torch.topk(...)` is `LOAD_ATTR` where `torch` was imported in the same module, else
    `LOAD_METHOD`)."""
    return tuple((_SAME_OPERATION.get(step.opname, step.opname),
                  None if step.opcode in _JUMPS else getattr(step.argval, "co_name", step.argval))
                 for step in dis.get_instructions(code))


def _nested_codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested_codes(const)


@functools.lru_cache(maxsize=None)
def _unchecked_steps(checked: types.CodeType) -> tuple:
    """The `_steps` of the original code: those of the checked code without the check's five (push
    the call's NULL, load the check, prepare the call, call, drop its result). Worked out when first
    needed, so that arming compiles each function once; the original code itself is kept nowhere."""
    steps = _steps(checked)
    start = next(i for i, (_, value) in enumerate(steps) if isinstance(value, functools.partial))
    return steps[:start - 1] + steps[start + 4:]


def _marker(code: types.CodeType) -> str:
    """A name any copy of this code must mention (the longest it uses): sources and marshalled data
    without it are not compiled or read a second time."""
    return max(code.co_names + code.co_varnames + (code.co_name,), key=len)


def _made_code(event: str, args: tuple):
    """The code object a `compile` or `marshal.loads` event is about to make (None if it fails)."""
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return marshal.loads(args[0]) if event == "marshal.loads" else compile(args[0], args[1], "exec")
    return None


def _file_mappings() -> dict[tuple[int, int], tuple[str, str]]:
    """(start, end) -> (permissions, file) of this process's file mappings, from /proc/self/maps."""
    mappings = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                start, end = (int(address, 16) for address in fields[0].split("-"))
                mappings[start, end] = fields[1], fields[5].rstrip("\n")
    return mappings


class _NativeLock:
    """The executable pages of a package's shared libraries, locked for the length of a call."""

    def __init__(self, name: str):
        spec = importlib.util.find_spec(name) if name not in _NATIVE_CODE_STAYS else None
        folder = os.path.dirname(spec.origin) + "/" if spec and spec.origin else None
        self.name, self.folder = name, folder
        ours = {span: path for span, (permissions, path) in _file_mappings().items()
                if folder and path.startswith(folder) and "x" in permissions}
        self.ranges = list(ours)
        self._loaded = {os.path.realpath(path) for path in ours.values()}  # loaded again, they map nothing new
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    @functools.cached_property
    def _files(self) -> dict[int, list[str]]:
        """The package's libraries, loaded or not (a GPU runner loads another build than a CPU one), by
        size; listed at the first `dlopen`, not at every sandbox start (tens of milliseconds)."""
        files: dict[int, list[str]] = {}
        for path in glob.glob(f"{self.folder}**/*.so*", recursive=True):
            files.setdefault(os.path.getsize(path), []).append(path)
        return files

    def _protect(self, protection: int) -> None:
        for start, end in self.ranges:
            if self._libc.mprotect(start, end - start, protection) != 0:
                raise OSError(ctypes.get_errno(), f"mprotect of {self.name}'s native code failed")

    def lock(self) -> None:
        self._protect(PROT_NONE)

    def unlock(self) -> bool:
        """Unlock; False when the pages were no longer locked (submission code unlocked them)."""
        mappings = _file_mappings()
        intact = all(mappings.get(span, ("",))[0].startswith("---") for span in self.ranges)
        self._protect(PROT_READ | PROT_EXEC)
        return intact

    def holds_copy(self, path) -> bool:
        """`path` is another of the package's libraries, or a copy of one (loaded, it would run unlocked)."""
        try:
            if os.path.realpath(path) in self._loaded:
                return False
            if os.path.realpath(path).startswith(self.folder):
                return True
            same_size = self._files.get(os.path.getsize(path), ())
            return bool(same_size) and _file_digest(path) in {_file_digest(library) for library in same_size}
        except (OSError, TypeError, ValueError):
            return False


def _file_digest(path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


@functools.lru_cache(maxsize=None)
def _class_code(cls: type) -> frozenset[types.CodeType]:
    """The code of every function a class and its bases define, decorated ones unwrapped too."""
    found = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            for _ in range(8):  # a chain of decorators, each with `__wrapped__`
                code = getattr(value, "__code__", None)
                if isinstance(code, types.CodeType):
                    found.add(code)
                value = getattr(value, "__wrapped__", None)
                if value is None:
                    break
    return frozenset(found)


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
        self._allowed_code: set[types.CodeType] = set()  # the code of those modules' classes
        self._verdicts: dict[object, str | None] = {}
        self._modes_watching = False
        # `_names` of a forbidden function's code (the check adds none) -> [(its checked code, api)]
        self._copies: dict[tuple, list[tuple[types.CodeType, str]]] = {}
        self._bytecodes: dict[tuple, set[str]] = {}  # (bytecode, argument count), original and checked -> apis
        self._markers: set[str] = set()
        self._armed = frozenset(apis)
        self._checked: set[int] = set()  # ids of the checked code objects (their functions keep them alive)
        self._auditing = False
        for api in apis:
            self._arm(api)
        locks = (_NativeLock(name) for name in sorted({root_package(api) for api in apis}))
        self._native_locks = {lock.name: lock for lock in locks if lock.ranges}
        self._guard_mode_escapes()
        if self._copies or self._native_locks:
            sys.addaudithook(self._audit)

    @property
    def native_locked(self) -> list[str]:
        """The packages whose native code a call that forbids one of their APIs cannot run."""
        return sorted(self._native_locks)

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
        original = None if "::" in api else _resolve(api)
        if original is None:
            return
        target = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        target = inspect.unwrap(target)  # decorators (`no_grad`, deprecations) wrap the code that does the work
        if not inspect.isfunction(target):
            self._known_objects[api] = target  # builtins and C bindings: the torch modes see them
            return
        before = target.__code__
        if id(before) in self._checked:  # the same function under another name
            return
        target.__code__ = checked = _checked_code(target, functools.partial(self._entered, api))
        self._checked.add(id(checked))
        self._copies.setdefault(_names(checked), []).append((checked, api))
        self._markers.add(_marker(before))
        for code in (before, checked):
            self._bytecodes.setdefault((code.co_code, code.co_argcount), set()).add(api)

    def _entered(self, api: str) -> None:
        """First statement of a forbidden function: frame 1 is the function, frame 2 its caller."""
        if api in self.active and self.from_submission(sys._getframe(2)):
            self.violations.append(api)
            raise ForbiddenCall(api)

    def _audit(self, event: str, args: tuple) -> None:
        """Refuse a new copy of a forbidden function's code, whoever makes it and when (it would run
        without the check); during a watched call, making one counts as calling the API."""
        if event not in _CODE_EVENTS or self._auditing:
            return
        self._auditing = True
        try:
            copied = self._copied_apis(event, args)
        finally:
            self._auditing = False
        if copied:
            active = sorted(copied & self.active)
            if active and self.from_submission(sys._getframe(1)):
                self.violations.append(active[0])
            raise ForbiddenCall(f"{(active or sorted(copied))[0]} (a new copy of its code)")

    def _copied_apis(self, event: str, args: tuple) -> set[str]:
        if event == "ctypes.dlopen":  # a copy of a locked library would run unlocked
            return {api for api in self._armed if root_package(api) in self._native_locks
                    and self._native_locks[root_package(api)].holds_copy(args[0])}
        if event == "code.__new__":  # code.replace, types.CodeType: only the bytecode is known yet
            return self._bytecodes.get((args[0], args[3]), set())
        if event != "exec" and not self._might_copy(args[0]):
            return set()
        made = args[0] if event == "exec" else _made_code(event, args)
        if not isinstance(made, types.CodeType):
            return set()
        return {api for code in _nested_codes(made) for checked, api in self._copies.get(_names(code), ())
                if _steps(code) == _unchecked_steps(checked)}

    def _might_copy(self, source) -> bool:
        if isinstance(source, str):
            return any(marker in source for marker in self._markers)
        if isinstance(source, (bytes, bytearray)):
            return any(marker.encode() in source for marker in self._markers)
        return True  # an AST or a buffer: compiled again to be sure

    def from_submission(self, frame) -> bool:
        """No method of a grader-provided model runs between this frame and the submission's call: a frame
        whose `self` is such a module and whose code is its class's own (a student's function with a
        parameter named `self` holding the model is the submission's code)."""
        while frame is not None:
            if id(frame.f_locals.get("self")) in self._allowed_modules and frame.f_code in self._allowed_code:
                return False
            frame = frame.f_back
        return True

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
        self._allowed_code = {code for model in models for m in model.modules() for code in _class_code(type(m))}
        self._verdicts = {}
        # Only for APIs the modes can see: they put every torch call through Python (about 10x on a
        # loop-heavy function), which a pure-Python API, checked in its own code, does not need.
        modes = [_FunctionMode(self), _DispatchMode(self)] if self._patterns or self._objects else []
        locked = [self._native_locks[name] for name in sorted({root_package(api) for api in self.active})
                  if name in self._native_locks]
        entered = []
        try:
            for lock in locked:
                lock.lock()
            for mode in modes:
                mode.__enter__()
                entered.append(mode)
            self._modes_watching = bool(entered)
            yield
        finally:
            self.active, self._modes_watching = frozenset(), False
            if not all([lock.unlock() for lock in locked]):
                self.violations.append(UNLOCKED)
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
