"""MultiHeadSelfAttention, loaded with reference weights, against torch.nn.MultiheadAttention."""

import pytest

from transformer_references import (D_MODEL, MHA_HINT, N_HEADS, assert_close_or_diagnose, projection_weights,
                                    random_tensor, reference_multi_head_attention)

pytestmark = [
    pytest.mark.question("MultiHeadSelfAttention"),
    pytest.mark.forbidden("torch.nn.functional.scaled_dot_product_attention"),
]


def student_module(submission, weights):
    """The student's module, built in the sandbox, carrying the reference weights."""
    mha = submission.MultiHeadSelfAttention(D_MODEL, N_HEADS)
    mha.load_state_dict(weights)  # strict: fails unless q_proj/k_proj/v_proj/o_proj are bias-free nn.Linear
    return mha


@pytest.mark.points(1)
def test_matches_torch_multihead_attention_causal(submission):
    weights, x = projection_weights(seed=100), random_tensor(2, 6, D_MODEL, seed=104)
    assert_close_or_diagnose(student_module(submission, weights)(x, causal=True),
                             reference_multi_head_attention(weights, x, causal=True),
                             what="MultiHeadSelfAttention(64, 4)(x, causal=True) on x of shape [2, 6, 64]",
                             hint=MHA_HINT)


@pytest.mark.points(1)
def test_matches_torch_multihead_attention_without_mask(submission):
    weights, x = projection_weights(seed=110), random_tensor(2, 5, D_MODEL, seed=114)
    assert_close_or_diagnose(student_module(submission, weights)(x, causal=False),
                             reference_multi_head_attention(weights, x, causal=False),
                             what="MultiHeadSelfAttention(64, 4)(x, causal=False)", hint=MHA_HINT)


@pytest.mark.points(1)
def test_is_causal_by_default(submission):
    weights, x = projection_weights(seed=120), random_tensor(1, 4, D_MODEL, seed=124)
    assert_close_or_diagnose(student_module(submission, weights)(x),
                             reference_multi_head_attention(weights, x, causal=True),
                             what="MultiHeadSelfAttention(64, 4)(x) (forward's default must be causal=True)")


@pytest.mark.points(1)
def test_batch_of_one_with_a_single_token(submission):
    weights, x = projection_weights(seed=130), random_tensor(1, 1, D_MODEL, seed=134)
    assert_close_or_diagnose(student_module(submission, weights)(x, causal=True),
                             reference_multi_head_attention(weights, x, causal=True),
                             what="MultiHeadSelfAttention(64, 4) on one token of a batch of one", hint=MHA_HINT)


@pytest.mark.points(1)
def test_rejects_d_model_not_divisible_by_n_heads(submission):
    for d_model, n_heads in ((64, 5), (30, 4)):
        with submission.raises(ValueError):
            submission.MultiHeadSelfAttention(d_model, n_heads)


@pytest.mark.gpu
@pytest.mark.points(0)
def test_on_cuda(submission):
    weights, x = projection_weights(seed=140), random_tensor(2, 6, D_MODEL, seed=144, device="cuda")
    mha = student_module(submission, weights)
    mha.to("cuda")
    assert_close_or_diagnose(mha(x, causal=True), reference_multi_head_attention(weights, x, causal=True),
                             what="MultiHeadSelfAttention(64, 4).to('cuda') on CUDA input", hint=MHA_HINT,
                             profile="tf32")
