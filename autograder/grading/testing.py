"""What hidden tests compare with, and how: comparisons whose failure messages a student can act on,
and reference values computed once per grading process.

`assert_close` wraps the same rule as `torch.testing.assert_close` (|a - e| <= atol + rtol * |e|),
with per-dtype defaults taken from course_config.py, and says what went wrong in plain words:
wrong type, shape, dtype or device; NaNs; how many elements are off, the worst one and where.
`reference` caches a suite's reference computations for the whole batch a worker grades.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import math

import torch

from autograder.grading import timings

# Used when no course config is active (e.g. public checks in a student's notebook).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-5),
    "tf32": (5e-3, 5e-3),
    "fp16": (5e-3, 5e-3),
    "bf16": (3e-2, 3e-2),
    "fp64": (1e-7, 1e-9),
}
_active: dict[str, tuple[float, float]] = dict(DEFAULT_TOLERANCES)

_REAL_OF_COMPLEX = {torch.complex64: torch.float32, torch.complex128: torch.float64, torch.complex32: torch.float16}
_PROFILE_OF_DTYPE = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


class ToleranceError(AssertionError):
    """A comparison failed; the message is written for the student."""


# Per reference function: inputs that vary per submission cannot grow the cache forever, nor can a large
# tensor (say, a submission's result passed on to a reference) fill it: such calls are computed, not kept.
REFERENCE_CACHE_ENTRIES = 256
REFERENCE_MAX_TENSOR_BYTES = 16 * 2**20


def reference(function):
    """Decorator for a reference computation of a hidden suite (the expected value of a test): it must
    be a pure function of its arguments, which it leaves unchanged. A grading worker then computes it
    once per batch instead of once per submission; each call gets its own deep copy of the value.

    Arguments are keyed by value: tensors by dtype, shape, device and bytes; zoo models by spec and
    weight fingerprint; zoo tokenizers by their settings; numbers, strings, dtypes and containers of
    these as they are. Tensors come back detached from autograd. A call with any other argument (a
    generator, whose state it advances; an object from the submission) is computed as usual and not
    cached. The cache lives in the worker, which never forks a sandbox, so no reference value reaches
    student code this way."""
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(function)
    @timings.timed("reference values")
    def cached(*args, **kwargs):
        key = _reference_key((args, kwargs))
        if key is None:
            return function(*args, **kwargs)
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = _detached(function(*args, **kwargs))
            if len(cache) > REFERENCE_CACHE_ENTRIES:
                cache.popitem(last=False)
        return copy.deepcopy(cache[key])

    cached.cache = cache
    return cached


def _detached(value):
    """A reference value without autograd history (which cannot be copied): values are compared, not
    differentiated."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_detached(v) for v in value)
    if type(value) is dict:
        return {k: _detached(v) for k, v in value.items()}
    return value


_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def _reference_key(value):
    """A hashable key equal for equal values, or None for a value that cannot be keyed."""
    from autograder.grading import zoo

    if isinstance(value, _PLAIN):
        return type(value).__name__, value
    if isinstance(value, torch.Tensor):
        if (value.layout != torch.strided or value.is_quantized or value.requires_grad
                or value.numel() * value.element_size() > REFERENCE_MAX_TENSOR_BYTES):
            return None
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return "tensor", value.dtype, tuple(value.shape), str(value.device), hashlib.sha256(data).hexdigest()
    # The zoo's mark is read from the object's own __dict__: an object from the submission (a handle)
    # answers any attribute from the sandbox, and could claim to be a zoo tokenizer to share a key.
    spec = getattr(value, "__dict__", {}).get("_autograder_spec")
    if isinstance(value, torch.nn.Module):
        return None if spec is None else ("model", spec, zoo.fingerprint(value))
    if spec == "tokenizer" and type(value).__module__.startswith("transformers."):
        return "tokenizer", repr(value)
    if isinstance(value, (list, tuple)):
        items = tuple(_reference_key(v) for v in value)
        return None if None in items else (type(value).__name__, items)
    if isinstance(value, dict):
        items = tuple((_reference_key(k), _reference_key(v)) for k, v in value.items())
        return None if any(None in pair for pair in items) else ("dict", items)
    return None


def configure(tolerances: dict) -> None:
    """Install an assignment's tolerances ({profile: Tolerance or (rtol, atol)})."""
    _active.clear()
    _active.update(DEFAULT_TOLERANCES)
    for profile, tol in tolerances.items():
        _active[profile] = (tol.rtol, tol.atol) if hasattr(tol, "rtol") else tuple(tol)


def tolerance_for(dtype: torch.dtype, profile: str | None = None) -> tuple[float, float]:
    profile = profile or _PROFILE_OF_DTYPE.get(dtype, "fp32")
    return _active[profile]


def _where(flat_index: int, shape: torch.Size) -> list[int]:
    idx = []
    for size in reversed(shape):
        idx.append(flat_index % size)
        flat_index //= size
    return list(reversed(idx))


def _fmt(x: float) -> str:
    return "NaN" if math.isnan(x) else f"{x:.4g}"


def _check_tensor_meta(actual, expected: torch.Tensor, what: str) -> None:
    if type(actual) is not torch.Tensor and not isinstance(actual, torch.nn.Parameter):
        got = type(actual).__name__
        raise ToleranceError(f"{what}: expected a torch.Tensor, got {got}")
    if actual.shape != expected.shape:
        raise ToleranceError(
            f"{what}: shape {list(actual.shape)} but expected {list(expected.shape)}"
        )
    if actual.dtype != expected.dtype:
        raise ToleranceError(f"{what}: dtype {actual.dtype} but expected {expected.dtype}")
    if actual.device.type != expected.device.type:
        raise ToleranceError(f"{what}: on device {actual.device} but expected {expected.device}")


@timings.timed("comparisons")
def assert_close(
    actual,
    expected,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    profile: str | None = None,
    what: str = "result",
    equal_nan: bool = False,
) -> None:
    """Assert `actual` matches `expected` elementwise; numbers and nested lists/tuples/dicts too.

    Floating dtypes use the active per-dtype tolerance unless `rtol`/`atol` are given (`profile`
    picks another row of the table, e.g. "tf32" for CUDA matmuls). Integer and bool tensors must be
    equal unless `atol` is given (e.g. `atol=1` for int8 codes rounded from fp16 on CUDA).
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise ToleranceError(f"{what}: expected a dict, got {type(actual).__name__}")
        if set(actual) != set(expected):
            missing = [k for k in expected if k not in actual]
            extra = [k for k in actual if k not in expected]
            raise ToleranceError(f"{what}: keys differ; missing {missing}, unexpected {extra}")
        for key in expected:
            assert_close(actual[key], expected[key], rtol=rtol, atol=atol, profile=profile,
                         what=f"{what}[{key!r}]", equal_nan=equal_nan)
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            raise ToleranceError(f"{what}: expected a {type(expected).__name__}, got {type(actual).__name__}")
        if len(actual) != len(expected):
            raise ToleranceError(f"{what}: length {len(actual)} but expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rtol=rtol, atol=atol, profile=profile, what=f"{what}[{i}]", equal_nan=equal_nan)
        return
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(actual, torch.Tensor) and actual.numel() == 1:
            actual = actual.item()
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            raise ToleranceError(f"{what}: expected a number, got {type(actual).__name__}")
        r, a = tolerance_for(torch.float32, profile)
        r, a = (rtol if rtol is not None else r), (atol if atol is not None else a)
        if math.isnan(actual) or math.isnan(expected):
            if equal_nan and math.isnan(actual) and math.isnan(expected):
                return
            raise ToleranceError(f"{what}: got {_fmt(actual)}, expected {_fmt(expected)}")
        if math.isinf(actual) or math.isinf(expected):
            if actual != expected:
                raise ToleranceError(f"{what}: got {_fmt(actual)}, expected {_fmt(expected)}")
            return
        if not abs(actual - expected) <= a + r * abs(expected):
            raise ToleranceError(
                f"{what}: got {_fmt(actual)}, expected {_fmt(expected)} "
                f"(abs error {_fmt(abs(actual - expected))}; tolerance rtol {r:g}, atol {a:g})"
            )
        return
    if not isinstance(expected, torch.Tensor):
        if actual != expected:
            raise ToleranceError(f"{what}: got {actual!r}, expected {expected!r}")
        return

    _check_tensor_meta(actual, expected, what)
    a_cpu = actual.detach().cpu()
    e_cpu = expected.detach().cpu()
    if a_cpu.numel() == 0:
        return
    if not (e_cpu.is_floating_point() or e_cpu.is_complex()):
        tol = 0 if atol is None else atol
        diff = (a_cpu.long() - e_cpu.long()).abs()
        bad = diff > tol
        if bad.any():
            first = int(bad.flatten().nonzero()[0])
            pos = _where(first, e_cpu.shape)
            worst = int(diff.flatten().argmax())
            raise ToleranceError(
                f"{what}: {int(bad.sum())} of {e_cpu.numel()} values differ "
                f"({100 * bad.float().mean().item():.1f}%); first at {pos}: got "
                f"{a_cpu.flatten()[first].item()}, expected {e_cpu.flatten()[first].item()}; "
                f"largest difference {int(diff.flatten()[worst])} at {_where(worst, e_cpu.shape)}"
                + (f"; allowed difference {tol}" if tol else "; values must be exactly equal")
            )
        return

    if e_cpu.is_complex():
        # Real and imaginary parts compared alike; the last index of a position picks the part.
        assert_close(torch.view_as_real(a_cpu.resolve_conj()), torch.view_as_real(e_cpu.resolve_conj()),
                     rtol=rtol, atol=atol, profile=profile or _PROFILE_OF_DTYPE.get(_REAL_OF_COMPLEX.get(e_cpu.dtype)),
                     what=f"{what} (real, imaginary)", equal_nan=equal_nan)
        return
    r, a = tolerance_for(expected.dtype, profile)
    r, a = (rtol if rtol is not None else r), (atol if atol is not None else a)
    ad, ed = a_cpu.double(), e_cpu.double()
    a_nan, e_nan = ad.isnan(), ed.isnan()
    nan_bad = a_nan ^ e_nan if equal_nan else a_nan | e_nan  # equal_nan: NaN matches NaN, nothing else
    if nan_bad.any():
        first = int(nan_bad.flatten().nonzero()[0])
        raise ToleranceError(
            f"{what}: {int((a_nan & ~e_nan).sum())} NaN values where the reference has numbers"
            f" and {int((e_nan & ~a_nan).sum())} numbers where the reference has NaN;"
            f" first at {_where(first, e_cpu.shape)}"
            f" (got {a_cpu.flatten()[first].item()}, expected {e_cpu.flatten()[first].item()})"
        )
    # Infinities (the -inf of a masked logit) must match exactly; finite values within tolerance.
    same = (ad == ed) | (a_nan & e_nan)
    abs_err = torch.where(same, torch.zeros_like(ad), (ad - ed).abs())
    abs_err = torch.where(abs_err.isnan(), torch.full_like(ad, math.inf), abs_err)
    any_inf = ad.isinf() | ed.isinf()
    bad = torch.where(any_inf, ~same, abs_err > a + r * ed.abs())
    if bad.any():
        worst = int(torch.where(bad, abs_err, torch.full_like(abs_err, -1.0)).flatten().argmax())
        rel = abs_err / ed.abs().clamp_min(1e-30)
        raise ToleranceError(
            f"{what}: {int(bad.sum())} of {e_cpu.numel()} elements ({100 * bad.double().mean().item():.1f}%)"
            f" differ beyond tolerance; max abs error {_fmt(abs_err.flatten()[worst].item())} at "
            f"{_where(worst, e_cpu.shape)} (got {_fmt(ad.flatten()[worst].item())}, expected "
            f"{_fmt(ed.flatten()[worst].item())}); max rel error {_fmt(rel[bad].max().item())}; "
            f"tolerance rtol {r:g}, atol {a:g} ({profile or _PROFILE_OF_DTYPE.get(expected.dtype, 'fp32')})"
        )


@timings.timed("comparisons")
def assert_same_text(actual, expected: str, *, what: str = "text") -> None:
    """Exact string equality, pointing at the first character that differs."""
    if type(actual) is not str:
        raise ToleranceError(f"{what}: expected a str, got {type(actual).__name__}")
    if actual == expected:
        return
    i = next((k for k, (x, y) in enumerate(zip(actual, expected)) if x != y), min(len(actual), len(expected)))
    raise ToleranceError(
        f"{what} differs from the reference at character {i}: got {actual[i:i + 30]!r}, "
        f"expected {expected[i:i + 30]!r} (lengths {len(actual)} and {len(expected)})"
    )
