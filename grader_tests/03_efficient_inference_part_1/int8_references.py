"""Plain-torch references for the quantization tasks, computed in float64 in the grader's process.

A submission computes `x / scale` in float32 (or another order of operations), so where the exact
value lies on a rounding tie `k + 0.5` its code may land on either neighbour. `assert_codes` accepts
both neighbours there and only there; everywhere else the code is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autograder import zoo
from autograder.testing import assert_close, reference

# Library shortcuts for what the students write by hand; they fail the test when called.
FORBIDDEN = (
    "bitsandbytes.functional.int8_vectorwise_quant",
    "bitsandbytes.functional.int8_vectorwise_dequant",
    "bitsandbytes.functional.int8_double_quant",
    "bitsandbytes.functional.quantize_blockwise",
    "bitsandbytes.functional.dequantize_blockwise",
    "torch.quantize_per_tensor",
    "torch.quantize_per_tensor_dynamic",
    "torch.fake_quantize_per_tensor_affine",
    "torch.quantize_per_channel",
    "torch.fake_quantize_per_channel_affine",
    # the same operations reached through torch.ops under their other names
    "aten::quantize_per_*",
    "aten::fake_quantize_per_*",
    "aten::_fake_quantize_*",
    "quantized_decomposed::*",
)

# |x / scale - (k + 0.5)| below which either neighbour is a correct code. x / scale is at most 255
# and float32 carries about 3 ulp of error there (3 * 255 * 6e-8 < 5e-5); 1e-4 leaves room.
TIE_SLACK = 1e-4


@dataclass(frozen=True)
class Grid:
    """One tensor's quantization grid: codes are round(ratio) + zero_point, clamped to [low, high]."""

    ratio: torch.Tensor  # x / scale in float64, before rounding
    scale: float
    zero_point: int
    low: int
    high: int

    def codes(self) -> torch.Tensor:
        return (torch.round(self.ratio) + self.zero_point).clamp(self.low, self.high).long()

    def dequantized(self) -> torch.Tensor:
        return (self.codes() - self.zero_point).double() * self.scale


def absmax_grid(x: torch.Tensor) -> Grid:
    x = x.detach().cpu().double()
    amax = x.abs().max().item()
    scale = amax / 127 if amax > 0 else 1.0
    return Grid(x / scale, scale, 0, -127, 127)


def zeropoint_grid(x: torch.Tensor) -> Grid:
    x = x.detach().cpu().double()
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    return Grid(x / scale, scale, round(-lo / scale), 0, 255)


GRIDS = {"absmax": absmax_grid, "zeropoint": zeropoint_grid}


def assert_codes(codes: torch.Tensor, grid: Grid, *, what: str) -> None:
    """Codes equal round-half-to-even of x / scale plus the zero point (either neighbour at a tie)."""
    codes = codes.detach().cpu().long()
    if codes.shape != grid.ratio.shape:
        raise AssertionError(f"{what}: shape {list(codes.shape)} but expected {list(grid.ratio.shape)}")
    lowest = (torch.round(grid.ratio - TIE_SLACK) + grid.zero_point).clamp(grid.low, grid.high)
    highest = (torch.round(grid.ratio + TIE_SLACK) + grid.zero_point).clamp(grid.low, grid.high)
    bad = (codes < lowest) | (codes > highest)
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {codes.numel()} codes are wrong; first at flat index {i}: "
            f"got {int(codes.flatten()[i])}, expected {int(grid.codes().flatten()[i])} "
            f"(x / scale = {grid.ratio.flatten()[i].item():.4f}"
            + (f", zero point {grid.zero_point})" if grid.zero_point else ")")
        )


def assert_within_half_a_step(restored, x: torch.Tensor, grid: Grid, *, what: str) -> None:
    """Rounding to the nearest code errs by at most scale / 2; a float32 scale and product add at most
    255 codes * 2 roundings * 6e-8 < 1e-4 of a step."""
    bound = grid.scale * (0.5 + 1e-4)
    assert_close(restored, x, rtol=0, atol=bound, what=f"{what} against x (each value within scale / 2 = {grid.scale / 2:.3g})")


def assert_codes_dtype(codes, dtype: torch.dtype, *, what: str) -> None:
    if not isinstance(codes, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor of codes, got {type(codes).__name__}")
    if codes.dtype != dtype:
        raise AssertionError(f"{what}: codes have dtype {codes.dtype}; they must be stored as {dtype}")


def assert_dtype(value, dtype: torch.dtype, *, what: str, zero_dim: bool = True) -> None:
    """A returned scale or zero point: a tensor of the promised dtype (0-dim where promised)."""
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what}: expected a 0-dim torch.Tensor, got {type(value).__name__}")
    if value.dtype != dtype:
        raise AssertionError(f"{what}: dtype {value.dtype}, expected {dtype}")
    if zero_dim and value.dim() != 0:
        raise AssertionError(f"{what}: shape {list(value.shape)}, expected a 0-dim tensor (shape [])")


def real_tensors(model, reference) -> dict[str, torch.Tensor]:
    """The parameters and buffers a returned model really holds, read module by module from its
    `_parameters` and `_buffers`, not through `state_dict()`/`named_parameters()`, which a model can
    override to show work it did not do. `reference` is a zoo model of the same architecture."""
    tensors = {}
    for name, module in reference.named_modules():
        if not module._parameters and not module._buffers:
            continue
        remote = model.get_submodule(name)
        for kind in ("_parameters", "_buffers"):
            if getattr(module, kind):
                for key, value in getattr(remote, kind).items():
                    if value is not None:
                        tensors[f"{name}.{key}" if name else key] = value
    return tensors


@reference
def fake_quantized_model(name: str, method: str):
    """A zoo model whose every nn.Linear weight went through the reference quantize-dequantize."""
    model = zoo.tiny_model(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(GRIDS[method](module.weight).dequantized())
    return model


def linear_weight_names(model) -> list[str]:
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


@reference
def precision_report(name: str, input_ids: torch.Tensor) -> dict[str, dict[str, float]]:
    """What compare_precisions must return for zoo model `name`: fp16 and bf16 copies against fp32."""
    device = str(input_ids.device)
    with torch.no_grad():
        reference = zoo.tiny_model(name, device=device)(input_ids).logits
        report = {}
        for key, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            low = zoo.tiny_model(name, dtype, device)(input_ids).logits.float()
            report[key] = {
                "token_agreement": (low.argmax(-1) == reference.argmax(-1)).double().mean().item(),
                "max_softmax_diff": (low.softmax(-1) - reference.softmax(-1)).abs().max().item(),
            }
    return report
