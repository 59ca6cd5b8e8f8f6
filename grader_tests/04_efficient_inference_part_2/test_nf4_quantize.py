"""nf4_quantize(w, blocksize=64) -> (codes: uint8 in [0, 15] shaped like w, absmax per block)."""

import pytest
import torch

from autograder.testing import assert_close
from quant_references import FORBIDDEN_BNB, bnb_nf4, expect_tensor, generator, needs_cuda_reference

pytestmark = [pytest.mark.question("nf4_quantize"), pytest.mark.forbidden(*FORBIDDEN_BNB)]


def assert_absmax_per_block(absmax, expected, numel: int, blocksize: int = 64) -> None:
    """One absmax per block of the flattened tensor; say so plainly when the count is wrong."""
    assert type(absmax) is torch.Tensor and absmax.shape == expected.shape, (
        f"absmax of nf4_quantize: expected one value per block of {blocksize} elements of the flattened "
        f"tensor ({numel} elements: shape {list(expected.shape)}), got "
        f"{list(absmax.shape) if type(absmax) is torch.Tensor else type(absmax).__name__}"
    )
    assert_close(absmax, expected, what=f"absmax of nf4_quantize (the max |w| of each block of {blocksize})")


@pytest.mark.points(1)
def test_codes_match_bitsandbytes(submission):
    w = torch.randn(48, 40, generator=generator(8)) * 0.02  # 30 blocks of 64
    codes, absmax = bnb_nf4(w)
    q, q_absmax = submission.nf4_quantize(w)
    assert_absmax_per_block(q_absmax, absmax, w.numel())
    assert_close(q, codes, what="codes of nf4_quantize(w) (index 0..15 of the nearest NF4 value to w / block absmax)")


@pytest.mark.points(1)
def test_other_blocksize_and_half_precision_input(submission):
    w = torch.randn(12, 50, generator=generator(14))  # 600 elements: 4 blocks of 128 and one of 88
    w[0, :5] *= 8  # the first block's absmax differs clearly from a block of 64's
    codes, absmax = bnb_nf4(w, blocksize=128)
    q, q_absmax = submission.nf4_quantize(w, blocksize=128)
    assert_absmax_per_block(q_absmax, absmax, w.numel(), blocksize=128)
    assert_close(q, codes, what="codes of nf4_quantize(w, blocksize=128) (use the blocksize argument)")
    for dtype in (torch.float16, torch.bfloat16):
        half = w.to(dtype)
        codes, absmax = bnb_nf4(half.float())  # the 16-bit values, exactly, in float32
        q, q_absmax = submission.nf4_quantize(half)
        what = f"nf4_quantize(w) for {dtype} w"
        expect_tensor(q, w.shape, torch.uint8, f"codes of {what}")
        expect_tensor(q_absmax, absmax.shape, torch.float32, f"absmax of {what} (float32 whatever w's dtype)")
        assert_close(q_absmax, absmax, what=f"absmax of {what}")
        assert_close(q, codes, what=f"codes of {what}")


@pytest.mark.points(1)
def test_last_partial_block_has_its_own_absmax(submission):
    w = torch.randn(7, 50, generator=generator(9))  # 350 elements: 5 full blocks and one of 30
    w[6, 40:] *= 10  # the partial block holds the largest values of the tensor
    codes, absmax = bnb_nf4(w)
    q, q_absmax = submission.nf4_quantize(w)
    assert_absmax_per_block(q_absmax, absmax, w.numel())
    assert_close(q, codes, what="codes of nf4_quantize(w) for 350 elements (the last block holds 30)")


@pytest.mark.points(1)
def test_zero_block_gives_absmax_zero_and_the_code_of_zero(submission):
    w = torch.randn(4, 64, generator=generator(10))
    w[1] = 0.0  # the second block is all zeros
    q, absmax = submission.nf4_quantize(w, blocksize=64)
    assert_absmax_per_block(absmax, bnb_nf4(w)[1], w.numel())
    assert float(absmax[1]) == 0.0, (f"absmax of an all-zero block: got {float(absmax[1]):.3g}, expected exactly 0 "
                                      "(guard the division instead of adding a small epsilon to the absmax)")
    assert_close(q[1], torch.full((64,), 7, dtype=torch.uint8),
                 what="codes of an all-zero block (every element gets code 7, the NF4 value 0.0)")


@needs_cuda_reference
@pytest.mark.points(1)
def test_cpu_codes_match_cuda_kernel(submission, cuda_reference):
    q, absmax = submission.nf4_quantize(cuda_reference["nf4_input"])
    assert_close(absmax, cuda_reference["nf4_absmax"], what="absmax against bitsandbytes' CUDA kernel")
    assert_close(q, cuda_reference["nf4_codes"], what="codes against bitsandbytes' CUDA kernel")


@pytest.mark.gpu
@pytest.mark.points(1)
def test_codes_on_cuda_match_cuda_kernel(submission, cuda):
    w = torch.randn(64, 96, generator=generator(11)).to(cuda)
    codes, absmax = bnb_nf4(w)
    q, q_absmax = submission.nf4_quantize(w)
    assert_close(q_absmax, absmax, what="absmax of nf4_quantize(w) for w on CUDA")
    assert_close(q, codes, what="codes of nf4_quantize(w) for w on CUDA")
