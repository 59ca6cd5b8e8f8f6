"""absmax_quantize / absmax_dequantize: symmetric int8, scale = max|x| / 127, codes in [-127, 127]."""

import pytest
import torch
from int8_references import FORBIDDEN, absmax_grid, assert_codes, assert_codes_dtype, assert_within_half_a_step

from autograder.testing import assert_close

pytestmark = [pytest.mark.question("absmax"), pytest.mark.forbidden(*FORBIDDEN)]


def weights(*shape, seed=0, device="cpu") -> torch.Tensor:
    """Weight-like values: roughly normal, with the absmax on a negative entry."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3
    x.view(-1)[0] = -x.abs().max() * 1.5
    return x.to(device)


def assert_matches_reference(submission, x: torch.Tensor) -> None:
    q, scale = submission.absmax_quantize(x)
    grid = absmax_grid(x)
    assert_codes_dtype(q, torch.int8, what="absmax_quantize(x)")
    assert q.device == x.device, f"absmax_quantize(x): codes are on {q.device}, x was on {x.device}"
    assert_close(scale, torch.tensor(grid.scale, dtype=x.dtype, device=x.device),
                 what="absmax_quantize(x) scale (max|x| / 127, a 0-dim tensor of x's dtype)")
    assert_codes(q, grid, what="absmax_quantize(x) codes (round(x / scale), half to even)")


@pytest.mark.points(1)
def test_codes_and_scale_match_the_reference(submission):
    assert_matches_reference(submission, weights(48, 40))


@pytest.mark.points(1)
def test_codes_stay_within_minus_127_and_127(submission):
    x = weights(16, 16, seed=1)
    x.view(-1)[1] = x.abs().max()  # both ends of the range present
    q, _ = submission.absmax_quantize(x)
    low, high = int(q.min()), int(q.max())
    assert low >= -127, f"codes reach {low}: absmax quantization is symmetric and clamps to [-127, 127]"
    assert (low, high) == (-127, 127), (
        f"codes span [{low}, {high}]: the entries with |x| = max|x| must map to -127 and 127 (scale = max|x| / 127)")


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
    scale = torch.tensor(0.0123)
    assert_close(submission.absmax_dequantize(q, scale), q.float() * scale,
                 what="absmax_dequantize(q, scale) (q * scale, in the scale's dtype)")


@pytest.mark.points(1)
def test_round_trip_error_is_at_most_half_a_step(submission):
    x = weights(64, 32, seed=3)
    restored = submission.absmax_dequantize(*submission.absmax_quantize(x))
    assert_within_half_a_step(restored, x, absmax_grid(x), what="absmax_dequantize(*absmax_quantize(x))")


@pytest.mark.gpu
@pytest.mark.points(1)
def test_quantizes_a_cuda_tensor(submission):
    assert_matches_reference(submission, weights(48, 40, seed=4, device="cuda"))
