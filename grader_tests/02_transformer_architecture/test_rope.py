"""apply_rope against the rotary embedding code of transformers' Llama and Qwen2 models."""

import pytest
import torch

from transformer_references import assert_close_or_diagnose, random_tensor, rope_mistakes, transformers_rope

pytestmark = pytest.mark.question("apply_rope")


def check_rope(submission, x, positions, *, base, arch="llama", what):
    """Call the student's apply_rope and compare it with transformers', naming a recognised mistake."""
    actual = submission.apply_rope(x, positions, base=base)
    assert_close_or_diagnose(actual, transformers_rope(x, positions, base=base, arch=arch), what=what,
                             mistakes=rope_mistakes(x, positions, base=base))


@pytest.mark.points(1)
def test_matches_llama_rotary_embedding(submission):
    x = random_tensor(2, 4, 6, 16, seed=200)
    check_rope(submission, x, torch.arange(6), base=10000.0,
               what="apply_rope(x [2, 4, 6, 16], positions=arange(6)) against transformers' Llama RoPE")


@pytest.mark.points(1)
def test_matches_qwen2_with_its_base_and_later_positions(submission):
    x = random_tensor(1, 2, 3, 32, seed=210)
    check_rope(submission, x, torch.arange(20, 23), base=1_000_000.0, arch="qwen2",
               what="apply_rope(x, positions=[20, 21, 22], base=1e6) against transformers' Qwen2 RoPE "
                    "(use the base argument, and the given positions rather than 0..seq-1)")


@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_keeps_half_precision(submission, dtype):
    x = random_tensor(2, 2, 5, 16, seed=220, dtype=dtype)
    check_rope(submission, x, torch.arange(5), base=10000.0,
               what=f"apply_rope on {dtype} input (the result must stay {dtype})")


@pytest.mark.points(1)
def test_long_positions_in_half_precision(submission):
    """Angles computed in fp16/bf16 (positions or frequencies in the input's dtype) are off by radians
    at positions in the thousands; the text asks for fp32 angles."""
    positions = torch.tensor([1000, 2047, 2049, 4097, 8191, 8193])
    for dtype in (torch.float16, torch.bfloat16):
        x = random_tensor(2, 2, 6, 64, seed=250, dtype=dtype)
        check_rope(submission, x, positions, base=10000.0,
                   what=f"apply_rope on {dtype} input at positions {positions.tolist()} "
                        "(compute the angles in fp32, then return the input's dtype)")


@pytest.mark.points(1)
def test_single_token_of_a_batch_of_one(submission):
    x = random_tensor(1, 1, 1, 8, seed=230)
    check_rope(submission, x, torch.tensor([7]), base=10000.0,
               what="apply_rope on one token at position 7 of a batch of one")


@pytest.mark.gpu
@pytest.mark.points(0)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_on_cuda(submission, dtype):
    x = random_tensor(2, 4, 6, 16, seed=240, dtype=dtype, device="cuda")
    check_rope(submission, x, torch.arange(6, device="cuda"), base=10000.0,
               what=f"apply_rope on CUDA {dtype} input (compute the angles on x's device)")
