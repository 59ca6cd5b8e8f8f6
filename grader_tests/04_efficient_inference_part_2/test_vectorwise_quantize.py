"""vectorwise_quantize(x) -> (int8 codes, row absmax): LLM.int8()'s per-row absmax quantization."""

import pytest
import torch

from autograder.testing import assert_close
from quant_references import FORBIDDEN_BNB, bnb_int8, expect_tensor, generator, needs_cuda_reference

pytestmark = [pytest.mark.question("vectorwise_quantize"), pytest.mark.forbidden(*FORBIDDEN_BNB)]


@pytest.mark.points(1)
def test_codes_and_row_scales_match_bitsandbytes(submission):
    x = torch.randn(32, 96, generator=generator(1)) * 3
    codes, scales, _ = bnb_int8(x)
    q, row_scale = submission.vectorwise_quantize(x)
    assert_close(row_scale, scales, what="row_scale of vectorwise_quantize(x) (the absmax of each row)")
    assert_close(q, codes, what="codes of vectorwise_quantize(x) (round(x * 127 / row absmax) per row: symmetric, -127..127)")


@pytest.mark.points(1)
def test_half_precision_input_on_the_cpu(submission):
    for dtype in (torch.float16, torch.bfloat16):
        x = (torch.randn(24, 80, generator=generator(13)) * 3).to(dtype)
        codes, scales, _ = bnb_int8(x.float())  # the 16-bit values, exactly, in float32
        q, row_scale = submission.vectorwise_quantize(x)
        what = f"vectorwise_quantize(x) for {dtype} x on the CPU"
        expect_tensor(q, x.shape, torch.int8, f"codes of {what}")
        expect_tensor(row_scale, x.shape[:1], torch.float32, f"row_scale of {what} (float32 whatever x's dtype)")
        assert_close(row_scale, scales, what=f"row_scale of {what} (the absmax of each row)")
        assert_close(q, codes, atol=1, what=f"codes of {what} (computed in float32; one code apart allowed)")


@pytest.mark.points(1)
def test_rounds_half_to_even(submission):
    # With a row absmax of 127 every code is round(x) exactly, so each .5 tests the tie rule.
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 63.5, 64.5]])
    expected = torch.tensor([[127, 0, 2, 2, 0, -2, -2, 64, 64]], dtype=torch.int8)
    q, _ = submission.vectorwise_quantize(x)
    assert_close(q, expected, what="codes of a row whose values land exactly on .5 "
                                   "(ties must round half to even, as torch.round does)")


@pytest.mark.points(1)
def test_zero_row_gives_zero_codes_and_zero_scale(submission):
    x = torch.tensor([[1.0, -2.0, 4.0], [0.0, 0.0, 0.0], [-0.5, 0.25, 0.0]])
    q, row_scale = submission.vectorwise_quantize(x)
    # exact: each row's absmax is one of its entries, and the all-zero row's is 0, not a small epsilon
    assert_close(row_scale, torch.tensor([4.0, 0.0, 0.5]), rtol=0, atol=0,
                 what="row_scale with an all-zero middle row (each row's max |x|, exactly 0 for the zero row)")
    assert_close(q, torch.tensor([[32, -64, 127], [0, 0, 0], [-127, 64, 0]], dtype=torch.int8),
                 what="codes of [[1, -2, 4], [0, 0, 0], [-0.5, 0.25, 0]] (each row's absmax maps to +-127; the all-zero "
                      "row must give codes 0, not NaN)")


@pytest.mark.points(1)
def test_dequantized_values_within_half_a_step(submission):
    x = torch.randn(16, 64, generator=generator(2))
    q, row_scale = submission.vectorwise_quantize(x)
    expect_tensor(q, x.shape, torch.int8, "codes of vectorwise_quantize(x)")
    expect_tensor(row_scale, x.shape[:1], torch.float32, "row_scale of vectorwise_quantize(x)")
    half_step = x.abs().amax(dim=1, keepdim=True) / 254
    excess = (q.float() * row_scale[:, None] / 127 - x).abs() - half_step
    row, col = divmod(int(excess.flatten().argmax()), x.shape[1])
    assert excess[row, col] <= 1e-6 * half_step[row, 0], (
        f"q * row_scale / 127 must lie within half a quantization step (row absmax / 254) of x; element "
        f"[{row}, {col}] is {excess[row, col] + half_step[row, 0]:.4g} away, half a step is {half_step[row, 0]:.4g}"
    )


@needs_cuda_reference
@pytest.mark.points(1)
def test_cpu_codes_match_cuda_kernel(submission, cuda_reference):
    x = cuda_reference["int8_input"].float()
    q, row_scale = submission.vectorwise_quantize(x)
    assert_close(row_scale, cuda_reference["int8_row_scales"], what="row_scale against the CUDA kernel")
    assert_close(q, cuda_reference["int8_codes"], atol=1,
                 what="codes against bitsandbytes' CUDA kernel (which rounds from fp16: off by 1 is allowed)")


@pytest.mark.gpu
@pytest.mark.points(1)
def test_codes_on_cuda_match_cuda_kernel(submission, cuda):
    x = (torch.randn(48, 160, generator=generator(3)) * 2).half().to(cuda)
    codes, scales, _ = bnb_int8(x)
    q, row_scale = submission.vectorwise_quantize(x)
    assert_close(row_scale, scales, what="row_scale of vectorwise_quantize(x) for fp16 x on CUDA (float32)")
    assert_close(q, codes, atol=1, what="codes of vectorwise_quantize(x) for fp16 x on CUDA")
