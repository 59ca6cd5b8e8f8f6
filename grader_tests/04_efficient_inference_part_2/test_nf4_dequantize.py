"""nf4_dequantize(codes, absmax, blocksize=64): NF4 value of each code times its block's absmax."""

import pytest
import torch

from autograder.testing import assert_close
from quant_references import FORBIDDEN_BNB, bnb_nf4, bnb_nf4_dequantize, expect_tensor, generator, nf4_reference_dequantize

pytestmark = [pytest.mark.question("nf4_dequantize"), pytest.mark.forbidden(*FORBIDDEN_BNB)]


@pytest.mark.points(2)
def test_matches_bitsandbytes(submission):
    for rows, cols in [(32, 64), (5, 70)]:  # whole blocks only; then 350 elements with a partial last block
        codes, absmax = bnb_nf4(torch.randn(rows, cols, generator=generator(12)))
        assert_close(submission.nf4_dequantize(codes, absmax), bnb_nf4_dequantize(codes, absmax),
                     what=f"nf4_dequantize(codes, absmax) for a {rows}x{cols} tensor "
                          f"(NF4_CODE[code] * absmax of the element's block of 64, shaped like codes)")
    codes, absmax = bnb_nf4(torch.randn(12, 50, generator=generator(15)), blocksize=128)  # last block: 88
    restored = submission.nf4_dequantize(codes, absmax, blocksize=128)
    what = "nf4_dequantize(codes, absmax, blocksize=128) for a 12x50 tensor (use the blocksize argument)"
    expect_tensor(restored, codes.shape, torch.float32, what)
    assert_close(restored, nf4_reference_dequantize(codes, absmax, 128), what=what)
