"""scaled_dot_product_attention against torch's own, written by hand (torch's SDPA is forbidden)."""

import pytest
import torch

from transformer_references import assert_close_or_diagnose, attention_mistakes, random_qkv, torch_attention

pytestmark = [
    pytest.mark.question("scaled_dot_product_attention"),
    pytest.mark.forbidden("torch.nn.functional.scaled_dot_product_attention"),
]


def check_attention(submission, q, k, v, *, what, causal=False, mask=None, **tolerance):
    """Call the student's attention and compare it with torch's, naming a recognised mistake."""
    actual = submission.scaled_dot_product_attention(q, k, v, causal=causal, mask=mask)
    assert_close_or_diagnose(actual, torch_attention(q, k, v, causal=causal, mask=mask), what=what,
                             mistakes=attention_mistakes(q, k, v, causal=causal, mask=mask), **tolerance)


@pytest.mark.points(1)
def test_matches_torch_without_a_mask(submission):
    q, k, v = random_qkv(2, 3, 5, 8, seed=10)
    check_attention(submission, q, k, v, what="scaled_dot_product_attention(q, k, v) on [2, 3, 5, 8]")


@pytest.mark.points(1)
def test_queries_and_keys_of_different_lengths(submission):
    q, k, v = random_qkv(1, 2, 3, 8, key_len=6, seed=20)
    check_attention(submission, q, k, v, what="scaled_dot_product_attention with 3 queries and 6 keys")


@pytest.mark.points(1)
def test_matches_torch_causal(submission):
    q, k, v = random_qkv(2, 4, 6, 16, seed=30)
    check_attention(submission, q, k, v, causal=True, what="scaled_dot_product_attention(q, k, v, causal=True)")


@pytest.mark.points(1)
def test_matches_torch_with_an_explicit_mask(submission):
    q, k, v = random_qkv(2, 2, 5, 8, seed=40)
    # A padding-style mask, [batch, 1, 1, keys]: the second sequence's first two keys are padding.
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, :, :, :2] = False
    check_attention(submission, q, k, v, mask=mask,
                    what="scaled_dot_product_attention(q, k, v, mask=<bool [2, 1, 1, 5], True = attend>)")


@pytest.mark.points(1)
def test_causal_together_with_a_padding_mask(submission):
    """The text says: with both, a key is attended only where the causal mask and `mask` both allow it."""
    q, k, v = random_qkv(2, 2, 6, 8, seed=45)
    # Padding at the end of the first sequence and a hole in the second; key 0 stays visible to all.
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, :, :, 4:] = False
    mask[1, :, :, 2] = False
    check_attention(submission, q, k, v, causal=True, mask=mask,
                    what="scaled_dot_product_attention(q, k, v, causal=True, mask=<bool [2, 1, 1, 6]>)")


@pytest.mark.points(1)
def test_masks_of_every_broadcastable_shape(submission):
    """`mask` is any boolean tensor broadcastable to [batch, heads, q_len, k_len], not only [batch, 1, 1, k_len]."""
    q, k, v = random_qkv(2, 3, 4, 8, key_len=5, seed=47)
    generator = torch.Generator().manual_seed(48)
    for shape in ((4, 5), (2, 3, 4, 5), (2, 1, 4, 5)):
        mask = torch.rand(*shape, generator=generator) < 0.6
        mask[..., 0] = True  # every query keeps at least one key
        check_attention(submission, q, k, v, mask=mask,
                        what=f"scaled_dot_product_attention(q [2, 3, 4, 8], k/v [2, 3, 5, 8], "
                             f"mask=<bool {list(shape)}>)")


@pytest.mark.points(1)
def test_batch_of_one_with_a_single_token(submission):
    q, k, v = random_qkv(1, 1, 1, 8, seed=50)
    check_attention(submission, q, k, v, causal=True,
                    what="scaled_dot_product_attention on one token of a batch of one, causal=True")


@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_keeps_half_precision(submission, dtype):
    q, k, v = random_qkv(2, 2, 6, 16, seed=60, dtype=dtype)
    check_attention(submission, q, k, v, causal=True,
                    what=f"scaled_dot_product_attention on {dtype} inputs (the result must stay {dtype})")


@pytest.mark.gpu
@pytest.mark.points(0)
@pytest.mark.parametrize("dtype, profile", [(torch.float32, "tf32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")],
                         ids=["fp32", "fp16", "bf16"])
def test_on_cuda(submission, dtype, profile):
    q, k, v = random_qkv(2, 4, 6, 16, seed=70, dtype=dtype, device="cuda")
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool, device="cuda").tril(4)
    check_attention(submission, q, k, v, mask=mask, profile=profile,
                    what=f"scaled_dot_product_attention on CUDA {dtype} inputs with a padding mask "
                         f"(create every mask on the inputs' device)")
