"""The restricted format between the trusted grader and a sandbox.

Everything crossing the boundary is written with `torch.save` and read back with
`torch.load(weights_only=True)`, whose unpickler only builds tensors, plain containers, numbers,
strings and the few reference classes allowlisted below. A submission can therefore never make the
grader construct one of its own objects (custom `__eq__`, tensor subclasses, patched classes): such
results stay in the sandbox and the grader receives a `HandleRef` to them instead.

Zoo models, the tokenizer and generators are not shipped as bytes: they travel as references and are
rebuilt in the sandbox, bit-identical to the grader's copy. Any other `nn.Module` of a class that torch,
transformers or the autograder defines travels as its class name, the plain attributes its constructor set,
its parameters (with `requires_grad`), buffers, submodules and mode, and is rebuilt in the sandbox.
"""

from __future__ import annotations

import collections
import importlib
import io
import zipfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

from autograder.grading import zoo

MAX_MESSAGE_BYTES = 512 * 2**20
# The pickled structure of a sandbox's reply (lists, dicts, numbers, strings; tensors' bytes are stored
# apart). Reading it back runs in the grader, untimed, at about a microsecond per item: a result of
# 20 million list items cost the grader 26 s per call. A graded result's structure is a few kB.
MAX_STRUCTURE_BYTES = 2**20


@dataclass(frozen=True)
class ModelRef:
    spec: zoo.ModelSpec


@dataclass(frozen=True)
class TokenizerRef:
    pass


@dataclass(frozen=True)
class GeneratorRef:
    state: torch.Tensor
    device: str


@dataclass(frozen=True)
class HandleRef:
    """An object that lives in the sandbox: its id in the sandbox's table and its type's name."""

    id: int
    type_name: str


@dataclass(frozen=True)
class ModuleRef:
    """An `nn.Module` the grader passes, rebuilt in the sandbox without its constructor."""

    module: str  # where the class is defined, imported by name in the sandbox
    qualname: str
    attributes: dict  # what the constructor set besides Module's own bookkeeping (in_features, eps, ...)
    parameters: dict  # name -> tensor or None
    frozen: list  # names of the parameters with requires_grad False
    buffers: dict  # name -> tensor or None
    non_persistent: list
    children: dict  # name -> ModuleRef or None
    training: bool


_ALLOWED = [ModelRef, zoo.ModelSpec, TokenizerRef, GeneratorRef, HandleRef, ModuleRef]
# Modules of classes from these packages cross: the grader's process and every sandbox import them alike
# (a class of the hidden suite itself is not importable in the sandbox).
MODULE_PACKAGES = ("torch", "transformers", "autograder")
# What Module.__init__ sets on every module: rebuilt in the sandbox, not sent.
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


class WireError(Exception):
    """A message could not be encoded or decoded."""


def _dumps(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _loads(data: bytes):
    with torch.serialization.safe_globals(_ALLOWED):
        return torch.load(io.BytesIO(data), weights_only=True, map_location=None)


def walk(obj, leaf: Callable[[Any], Any]):
    """Rebuild plain containers (exact types only) and map every other value through `leaf`."""
    kind = type(obj)
    if kind in (list, tuple):
        return kind(walk(x, leaf) for x in obj)
    if kind in (dict, collections.OrderedDict):
        return {walk(k, leaf): walk(v, leaf) for k, v in obj.items()}
    return leaf(obj)


# --- grader -> sandbox ------------------------------------------------------------------------


def _argument_leaf(obj):
    if type(obj) in _PLAIN_SCALARS:
        return obj
    if type(obj) is torch.Tensor:
        # torch.save writes a view's whole storage: send a slice of a big tensor as its own copy.
        compact = obj.untyped_storage().nbytes() == obj.numel() * obj.element_size()
        return obj if compact else obj.clone()
    if isinstance(obj, torch.nn.Parameter):
        return obj.detach()
    if isinstance(obj, torch.Generator):
        return GeneratorRef(obj.get_state(), str(obj.device))
    if isinstance(obj, HandleRef):
        return obj
    handle_ref = getattr(obj, "_handle_ref", None)
    if isinstance(handle_ref, HandleRef):
        return handle_ref
    spec = getattr(obj, "_autograder_spec", None)
    if spec == "tokenizer":
        return TokenizerRef()
    if isinstance(spec, zoo.ModelSpec):
        if zoo.fingerprint(obj) != obj._autograder_fingerprint:
            raise WireError("a zoo model was modified before being passed to the submission; "
                            "pass a fresh zoo.tiny_model(...)")
        return ModelRef(spec)
    if isinstance(obj, torch.nn.Module):
        return _module_ref(obj)
    raise WireError(f"cannot pass a {type(obj).__name__} to a submission (see docs/authoring.md)")


def _module_ref(module: torch.nn.Module) -> ModuleRef:
    cls, state = type(module), vars(module)
    if cls.__module__.split(".")[0] not in MODULE_PACKAGES or "<locals>" in cls.__qualname__:
        raise WireError(f"cannot pass a {cls.__name__} to a submission: only modules of classes from "
                        f"{', '.join(MODULE_PACKAGES)} cross (the sandbox imports the class by name); build the "
                        "argument from torch's layers (see docs/authoring.md)")
    hooks = sorted(k for k in _MODULE_INTERNALS if "hook" in k and state.get(k))
    if hooks:
        raise WireError(f"cannot pass a {cls.__name__} with hooks ({', '.join(hooks)}) to a submission")
    return ModuleRef(
        cls.__module__, cls.__qualname__,
        {k: walk(v, _argument_leaf) for k, v in state.items() if k not in _MODULE_INTERNALS},
        {n: None if p is None else _argument_leaf(p) for n, p in module._parameters.items()},
        [n for n, p in module._parameters.items() if p is not None and not p.requires_grad],
        {n: None if b is None else _argument_leaf(b) for n, b in module._buffers.items()},
        sorted(module._non_persistent_buffers_set),
        {n: None if c is None else _argument_leaf(c) for n, c in module._modules.items()},
        module.training,
    )


def _rebuilt(ref: ModuleRef, leaf: Callable[[Any], Any]) -> torch.nn.Module:
    """Sandbox side: the module `ref` describes, built as torch's own copy machinery does (no constructor)."""
    cls: Any = importlib.import_module(ref.module)
    for part in ref.qualname.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise WireError(f"{ref.module}.{ref.qualname} is not an nn.Module class")
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    for name, value in ref.attributes.items():
        object.__setattr__(module, name, walk(value, leaf))
    module.training = ref.training
    for name, tensor in ref.parameters.items():
        module._parameters[name] = None if tensor is None else torch.nn.Parameter(
            tensor, requires_grad=name not in ref.frozen)
    module._buffers.update(ref.buffers)
    module._non_persistent_buffers_set.update(ref.non_persistent)
    for name, child in ref.children.items():
        module._modules[name] = None if child is None else _rebuilt(child, leaf)
    return module


def input_tensors(args: list, kwargs: dict) -> dict[str, torch.Tensor]:
    """Every tensor a call's arguments hold, by where it sits (`args[0]`, `kwargs['x']`, `args[1].weight` for a
    module's parameters and buffers): taken on both sides, compared in the grader to see in-place changes."""
    found: dict[str, torch.Tensor] = {}

    def visit(value, path: str) -> None:
        if isinstance(value, torch.Tensor):
            found[path] = value.detach().clone()
        elif isinstance(value, torch.nn.Module):
            for name, tensor in [*value.named_parameters(), *value.named_buffers()]:
                found[f"{path}.{name}"] = tensor.detach().clone()
        elif type(value) in (list, tuple):
            for index, item in enumerate(value):
                visit(item, f"{path}[{index}]")
        elif type(value) in (dict, collections.OrderedDict):
            for key, item in value.items():
                visit(item, f"{path}[{key!r}]")

    for index, value in enumerate(args):
        visit(value, f"args[{index}]")
    for key, value in kwargs.items():
        visit(value, f"kwargs[{key!r}]")
    return found


def encode_arguments(obj) -> bytes:
    return _dumps(walk(obj, _argument_leaf))


def decode_arguments(data: bytes, handles: dict[int, Any], models: list | None = None):
    """Sandbox side: every call gets fresh copies of models and the tokenizer, so one call's
    in-place changes (quantized weights, a padding side) never leak into the next test.
    The zoo models handed out are appended to `models` (the sandbox instruments them)."""

    def leaf(obj):
        if isinstance(obj, ModelRef):
            model = zoo.from_spec(obj.spec)
            if models is not None:
                models.append(model)
            return model
        if isinstance(obj, TokenizerRef):
            return zoo.tiny_tokenizer()
        if isinstance(obj, GeneratorRef):
            generator = torch.Generator(device=obj.device)
            generator.set_state(obj.state)
            return generator
        if isinstance(obj, ModuleRef):
            return _rebuilt(obj, leaf)
        if isinstance(obj, HandleRef):
            try:
                return handles[obj.id]
            except KeyError:
                raise WireError("this object no longer exists in the sandbox (it was restarted)") from None
        return obj

    return walk(_loads(data), leaf)


# --- sandbox -> grader ------------------------------------------------------------------------


def encode_result(obj, handles: dict[int, Any]) -> bytes:
    """Sandbox side: plain data is sent as is; anything else stays here behind a handle."""

    def leaf(value):
        if type(value) in _PLAIN_SCALARS:
            return value
        if type(value) is torch.Tensor:
            return value.detach().clone()
        if type(value) is torch.nn.Parameter:  # read through a handle: whether it is frozen is part of the answer
            return value.detach().clone().requires_grad_(value.requires_grad)
        handle_id = len(handles) + 1
        handles[handle_id] = value
        return HandleRef(handle_id, type(value).__name__)

    return _dumps(walk(obj, leaf))


def encode_message(obj) -> bytes:
    """Control messages (requests, status, error reports): plain data only."""
    return _dumps(obj)


def _structure_bytes(data: bytes) -> int:
    """The size of the pickled structure in a `torch.save` archive, as its zip directory states it."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(entry.file_size for entry in archive.infolist() if entry.filename.endswith("data.pkl"))


def decode_message(data: bytes, make_handle: Callable[[HandleRef], Any] | None = None):
    """Grader side: the only way bytes from a sandbox are turned into objects."""
    try:
        structure = _structure_bytes(data)
    except (zipfile.BadZipFile, ValueError, OSError):
        structure = 0  # not an archive: the restricted loader refuses it below
    if structure > MAX_STRUCTURE_BYTES:
        raise WireError(f"the result is too large to read back: {structure / 2**20:.1f} MB of lists, numbers and "
                        f"strings (at most {MAX_STRUCTURE_BYTES / 2**20:g} MB; tensors do not count): return "
                        "tensors for bulk data")
    try:
        obj = _loads(data)
    except Exception as exc:
        raise WireError(f"the result could not be read back in the grader's restricted format ({type(exc).__name__}): "
                        "return tensors, numbers, strings, and lists, tuples or dicts of them") from None

    def leaf(value):
        if isinstance(value, HandleRef) and make_handle is not None:
            return make_handle(value)
        if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
            return value.detach().as_subclass(torch.Tensor)
        return value

    return walk(obj, leaf)
