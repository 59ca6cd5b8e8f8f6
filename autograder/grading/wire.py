"""The restricted format between the trusted grader and a sandbox.

Everything crossing the boundary is written with `torch.save` and read back with
`torch.load(weights_only=True)`, whose unpickler only builds tensors, plain containers, numbers,
strings and the few reference classes allowlisted below. A submission can therefore never make the
grader construct one of its own objects (custom `__eq__`, tensor subclasses, patched classes): such
results stay in the sandbox and the grader receives a `HandleRef` to them instead.

Zoo models, the tokenizer and generators are not shipped as bytes: they travel as references and are
rebuilt in the sandbox, bit-identical to the grader's copy.
"""

from __future__ import annotations

import collections
import io
from dataclasses import dataclass
from typing import Any, Callable

import torch

from autograder.grading import zoo

MAX_MESSAGE_BYTES = 512 * 2**20


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


_ALLOWED = [ModelRef, zoo.ModelSpec, TokenizerRef, GeneratorRef, HandleRef]
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
    raise WireError(f"cannot pass a {type(obj).__name__} to a submission (see docs/authoring.md)")


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
        if type(value) is torch.Tensor or type(value) is torch.nn.Parameter:
            return value.detach().clone()
        handle_id = len(handles) + 1
        handles[handle_id] = value
        return HandleRef(handle_id, type(value).__name__)

    return _dumps(walk(obj, leaf))


def encode_message(obj) -> bytes:
    """Control messages (requests, status, error reports): plain data only."""
    return _dumps(obj)


def decode_message(data: bytes, make_handle: Callable[[HandleRef], Any] | None = None):
    """Grader side: the only way bytes from a sandbox are turned into objects."""
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
