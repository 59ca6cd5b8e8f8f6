"""zeropoint_quantize / zeropoint_dequantize: asymmetric uint8 over [min(x, 0), max(x, 0)]."""

import pytest
import torch
from int8_references import (FORBIDDEN, assert_codes, assert_codes_dtype, assert_dtype, assert_within_half_a_step,
                             zeropoint_grid)

from autograder.testing import assert_close

pytestmark = [pytest.mark.question("zeropoint"), pytest.mark.forbidden(*FORBIDDEN)]


def activations(*shape, seed=0) -> torch.Tensor:
    """Skewed values (as after a SiLU), so the zero point sits well inside [0, 255]."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.silu(x * 2)


def whole_number(value, what: str) -> int:
    number = float(value)
    assert number == round(number), (
        f"{what} is {number:.8g}, not a whole number: round it (torch.round), so that 0.0 maps exactly to a code")
    return int(number)


def assert_matches_reference(submission, x: torch.Tensor, what: str) -> None:
    q, scale, zero_point = submission.zeropoint_quantize(x)
    grid = zeropoint_grid(x)
    assert_codes_dtype(q, torch.uint8, what=what)
    assert_dtype(scale, x.dtype, what=f"{what} scale (a 0-dim tensor of x's dtype, not upcast)")
    assert_close(scale, torch.tensor(grid.scale, dtype=x.dtype),
                 what=f"{what} scale ((max(x, 0) - min(x, 0)) / 255, a 0-dim tensor of x's dtype)")
    number = whole_number(zero_point, f"{what} zero point")
    if x.dtype == torch.float32:
        assert number == grid.zero_point, (
            f"{what}: zero point {float(zero_point):g}, expected {grid.zero_point} (round(-min(x, 0) / scale))")
        assert_codes(q, grid, what=f"{what} codes (round(x / scale) + zero point, clamped to [0, 255])")
    else:  # -min / scale and x / scale computed in 16 bits may round one code apart
        assert abs(number - grid.zero_point) <= 1, (
            f"{what}: zero point {float(zero_point):g}, expected {grid.zero_point} (round(-min(x, 0) / scale))")
        assert_close(q, grid.codes().to(torch.uint8), atol=1,
                     what=f"{what} codes (round(x / scale) + zero point; 16-bit arithmetic may land one code apart)")
    assert_dtype(zero_point, torch.int64, what=f"{what} zero point (a 0-dim torch.int64 tensor)")


@pytest.mark.points(1)
def test_codes_scale_and_zero_point_match_the_reference(submission):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert_matches_reference(submission, activations(40, 48).to(dtype), f"zeropoint_quantize({dtype} x)")


@pytest.mark.points(1)
def test_zero_point_is_rounded_half_to_even(submission):
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0])  # -min / scale = 85, an exact whole number ...
    x[0] = -1.01  # ... moved off it: 85.x must be rounded
    _, _, zero_point = submission.zeropoint_quantize(x)
    assert whole_number(zero_point, "zeropoint_quantize([-1.01, 0, 0.5, 2]) zero point") == zeropoint_grid(x).zero_point
    # scale is exactly 1 and -min / scale = 12.5, an exact tie: round half to even gives 12 (not 13);
    # then q = round(x / scale) + 12, each x / scale an exact tie as well.
    x = torch.tensor([-12.5, 0.0, 2.5, 3.5, 242.5])
    q, _, zero_point = submission.zeropoint_quantize(x)
    what = "zeropoint_quantize([-12.5, 0, 2.5, 3.5, 242.5]) (scale 1; ties round half to even, as torch.round does)"
    assert whole_number(zero_point, f"{what}: zero point") == 12, (
        f"{what}: zero point {float(zero_point):g}, expected round(12.5) = 12")
    assert_close(q, torch.tensor([0, 12, 14, 16, 254], dtype=torch.uint8),
                 what=f"{what}: codes (round(x / scale) first, then + zero point)")


@pytest.mark.points(1)
def test_codes_saturate_at_255_instead_of_wrapping(submission):
    # scale is exactly 1 and zero point round(11.5) = 12, so 243.5 rounds to code 244 + 12 = 256.
    x = torch.tensor([-11.5, 0.0, 100.25, 243.5])
    q, _, _ = submission.zeropoint_quantize(x)
    assert_codes_dtype(q, torch.uint8, what="zeropoint_quantize([-11.5, 0, 100.25, 243.5])")
    top = int(q[-1])
    assert top == 255, (
        f"x = 243.5 got code {top}, expected 255: round(x / scale) + zero point is 256 here and must be "
        "clamped to [0, 255] before the cast to uint8" + (", otherwise it wraps around" if top < 128 else ""))
    assert_codes(q, zeropoint_grid(x), what="zeropoint_quantize([-11.5, 0, 100.25, 243.5]) codes")


@pytest.mark.points(1)
def test_range_always_includes_zero(submission):
    positive = torch.linspace(1.0, 4.0, 13)
    assert_matches_reference(submission, positive, "zeropoint_quantize(x > 0) (range [0, max x], zero point 0)")
    assert_matches_reference(submission, -positive, "zeropoint_quantize(x < 0) (range [min x, 0], zero point 255)")


@pytest.mark.points(1)
def test_all_zero_input(submission):
    q, scale, zero_point = submission.zeropoint_quantize(torch.zeros(2, 5))
    assert_close(q, torch.zeros(2, 5, dtype=torch.uint8), what="zeropoint_quantize(zeros) codes")
    assert_close(scale, torch.tensor(1.0), what="zeropoint_quantize(zeros) scale (1 by the notebook's convention, never 0 or NaN)")
    assert whole_number(zero_point, "zeropoint_quantize(zeros) zero point") == 0, "zeropoint_quantize(zeros): zero point must be 0"
    assert_dtype(zero_point, torch.int64, what="zeropoint_quantize(zeros) zero point (a 0-dim torch.int64 tensor)")


@pytest.mark.points(1)
def test_dequantize_codes_below_the_zero_point(submission):
    q = torch.arange(0, 256, 15, dtype=torch.uint8)
    scale, zero_point = torch.tensor(0.02), torch.tensor(100)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        scale = torch.tensor(0.02, dtype=dtype)
        expected = ((q.double() - 100) * scale.double()).to(dtype)
        restored = submission.zeropoint_dequantize(q, scale, zero_point)
        what = (f"zeropoint_dequantize(q, {dtype} scale=0.02, zero_point=100) ((q - zero point) * scale, in the "
                "scale's dtype; convert q from uint8 before subtracting, or codes below the zero point wrap around)")
        assert_dtype(restored, dtype, what=what, zero_dim=False)
        assert_close(restored, expected, what=what)


@pytest.mark.points(1)
def test_round_trip_error_is_at_most_half_a_step(submission):
    x = activations(64, 32, seed=1)
    restored = submission.zeropoint_dequantize(*submission.zeropoint_quantize(x))
    assert_within_half_a_step(restored, x, zeropoint_grid(x), what="zeropoint_dequantize(*zeropoint_quantize(x))")
