"""absmax_quantize / absmax_dequantize: symmetric int8, scale = max|x| / 127, codes in [-127, 127]."""

import pytest
import torch
from int8_references import (FORBIDDEN, absmax_grid, assert_codes, assert_codes_dtype, assert_dtype,
                             assert_within_half_a_step)

from autograder.testing import assert_close

pytestmark = [pytest.mark.question("absmax"), pytest.mark.forbidden(*FORBIDDEN)]


def weights(*shape, seed=0, device="cpu") -> torch.Tensor:
    """Weight-like values: roughly normal, with the absmax on a negative entry."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3
    x.view(-1)[0] = -x.abs().max() * 1.5
    return x.to(device)


def assert_matches_reference(submission, x: torch.Tensor) -> None:
    what = f"absmax_quantize(x) for {x.dtype} x"
    q, scale = submission.absmax_quantize(x)
    grid = absmax_grid(x)
    assert_codes_dtype(q, torch.int8, what=what)
    assert q.device == x.device, f"{what}: codes are on {q.device}, x was on {x.device}"
    assert_dtype(scale, x.dtype, what=f"{what}: scale (a 0-dim tensor of x's dtype, not upcast)")
    assert_close(scale, torch.tensor(grid.scale, dtype=x.dtype, device=x.device),
                 what=f"{what}: scale (max|x| / 127, a 0-dim tensor of x's dtype)")
    if x.dtype == torch.float32:
        assert_codes(q, grid, what=f"{what}: codes (round(x / scale), half to even)")
    else:  # x / scale computed in 16 bits, or with the 16-bit scale in float32, may round one code apart
        assert_close(q.cpu(), grid.codes().to(torch.int8), atol=1,
                     what=f"{what}: codes (round(x / scale); 16-bit arithmetic may land one code apart)")


@pytest.mark.points(1)
def test_codes_and_scale_match_the_reference(submission):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert_matches_reference(submission, weights(48, 40).to(dtype))


@pytest.mark.points(1)
def test_codes_stay_within_minus_127_and_127(submission):
    x = weights(16, 16, seed=1)
    x.view(-1)[1] = x.abs().max()  # both ends of the range present
    q, _ = submission.absmax_quantize(x)
    low, high = int(q.min()), int(q.max())
    assert low >= -127, f"codes reach {low}: absmax quantization is symmetric and clamps to [-127, 127]"
    assert (low, high) == (-127, 127), (
        f"codes span [{low}, {high}]: the entries with |x| = max|x| must map to -127 and 127 (scale = max|x| / 127)")
    # In bfloat16, scale = max|x| / 127 rounds down here and max|x| / scale comes out as 128 (in bf16
    # and in float32 alike): only the clamp keeps the code at 127 (int8(128) wraps around to -128).
    amax = 0.010986328125
    x = torch.tensor([amax, -amax, amax / 2, 0.0], dtype=torch.bfloat16)
    q, _ = submission.absmax_quantize(x)
    codes = [int(c) for c in q]
    assert -127 <= min(codes) and max(codes) <= 127 and codes[0] >= 126 and codes[1] <= -126, (
        f"absmax_quantize(bfloat16 [{amax}, -{amax}, {amax / 2}, 0]) gave codes {codes}: in bfloat16 "
        "max|x| / scale rounds to 128 here, so clamp round(x / scale) to [-127, 127] before the cast to int8 "
        "(expected [127, -127, 64, 0], one code apart allowed)")


@pytest.mark.points(1)
def test_rounds_half_to_even(submission):
    x = torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, -0.5, 3.49, -126.5])  # scale is exactly 1
    q, _ = submission.absmax_quantize(x)
    expected = torch.tensor([127, 0, 2, 2, -2, 0, 3, -126], dtype=torch.int8)
    assert_close(q, expected, what="absmax_quantize([127, 0.5, 1.5, 2.5, -2.5, -0.5, 3.49, -126.5]) "
                                   "(scale 1; ties round to the even code, as torch.round does)")


@pytest.mark.points(1)
def test_all_zero_input(submission):
    q, scale = submission.absmax_quantize(torch.zeros(3, 4))
    assert_close(q, torch.zeros(3, 4, dtype=torch.int8), what="absmax_quantize(zeros) codes")
    assert_close(scale, torch.tensor(1.0), what="absmax_quantize(zeros) scale (1 by the notebook's convention, never 0 or NaN)")


@pytest.mark.points(1)
def test_dequantize(submission):
    q = torch.randint(-127, 128, (8, 12), dtype=torch.int8, generator=torch.Generator().manual_seed(2))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        scale = torch.tensor(0.0123, dtype=dtype)
        restored = submission.absmax_dequantize(q, scale)
        what = f"absmax_dequantize(q, {dtype} scale) (q * scale, in the scale's dtype)"
        assert_dtype(restored, dtype, what=what, zero_dim=False)
        assert_close(restored, (q.double() * scale.double()).to(dtype), what=what)


@pytest.mark.points(1)
def test_round_trip_error_is_at_most_half_a_step(submission):
    x = weights(64, 32, seed=3)
    restored = submission.absmax_dequantize(*submission.absmax_quantize(x))
    assert_within_half_a_step(restored, x, absmax_grid(x), what="absmax_dequantize(*absmax_quantize(x))")


@pytest.mark.gpu
@pytest.mark.points(1)
def test_quantizes_a_cuda_tensor(submission):
    assert_matches_reference(submission, weights(48, 40, seed=4, device="cuda"))
