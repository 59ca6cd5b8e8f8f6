"""Public checks for 01_intro: quick feedback in the notebook on small, hand-checkable cases.

They catch the common slips early (wrong shape, wrong position's logits, a filter that drops the
most likely token); the hidden suite grades the full contract.
"""

import torch

from autograder import zoo
from autograder.checks import check, public_check, same_on_gpu  # noqa: F401  (`check` is what the notebook imports)
from autograder.testing import assert_close, assert_same_text

NEG_INF = float("-inf")


@public_check("greedy_generate")
def matches_transformers_greedy_decoding(greedy_generate):
    qwen = zoo.tiny_model("qwen2")
    tok = zoo.tiny_tokenizer()
    encoded = tok("Attention lets", return_tensors="pt")
    with torch.no_grad():
        library_ids = qwen.generate(**encoded, do_sample=False, max_new_tokens=5)
    assert_same_text(greedy_generate(qwen, tok, "Attention lets", 5), tok.decode(library_ids[0]),
                     what="greedy_generate(tiny qwen2, 'Attention lets', 5)")


@public_check("apply_temperature")
def divides_logits_by_temperature(apply_temperature):
    scores = torch.tensor([[2.0, -1.0, 0.5]])
    assert_close(apply_temperature(scores, 0.5), torch.tensor([[4.0, -2.0, 1.0]]),
                 what="apply_temperature([[2, -1, 0.5]], 0.5)")


@public_check("apply_temperature")
def rejects_a_zero_temperature(apply_temperature):
    try:
        apply_temperature(torch.tensor([1.0, 2.0]), 0.0)
    except ValueError:
        return
    raise AssertionError("apply_temperature(..., 0.0) should raise ValueError: a temperature must be > 0")


@public_check("top_k_filter")
def keeps_the_two_largest(top_k_filter):
    scores = torch.tensor([[0.1, 2.0, -3.0, 1.5], [5.0, 4.0, 3.0, 2.0]])
    wanted = torch.tensor([[NEG_INF, 2.0, NEG_INF, 1.5], [5.0, 4.0, NEG_INF, NEG_INF]])
    assert_close(top_k_filter(scores, 2), wanted, what="top_k_filter(scores, k=2)")


@public_check("top_k_filter")
def keeps_ties_with_the_kth_largest(top_k_filter):
    scores = torch.tensor([[1.0, 4.0, 2.0, 2.0]])
    wanted = torch.tensor([[NEG_INF, 4.0, 2.0, 2.0]])
    assert_close(top_k_filter(scores, 2), wanted, what="top_k_filter([[1, 4, 2, 2]], k=2)")


@public_check("top_p_filter")
def keeps_the_smallest_nucleus(top_p_filter):
    # sorted, the tokens come in the order 2, 0, 1: the decision must go back to each token's own place
    scores = torch.tensor([[0.3, 0.2, 0.5]]).log()
    wanted = scores.masked_fill(torch.tensor([[False, True, False]]), NEG_INF)
    assert_close(top_p_filter(scores, 0.6), wanted, what="top_p_filter(log([0.3, 0.2, 0.5]), p=0.6)")


@public_check("top_p_filter")
def always_keeps_the_most_likely_token(top_p_filter):
    scores = torch.tensor([[0.3, 0.5, 0.2]]).log()
    wanted = scores.masked_fill(torch.tensor([[True, False, True]]), NEG_INF)
    assert_close(top_p_filter(scores, 0.4), wanted, what="top_p_filter(log([0.3, 0.5, 0.2]), p=0.4)")


@public_check("sample_next_token")
def returns_one_token_id_per_row(sample_next_token):
    drawn = sample_next_token(torch.zeros(3, 10), generator=torch.Generator().manual_seed(1))
    assert isinstance(drawn, torch.Tensor) and drawn.dtype == torch.long and drawn.shape == (3,), (
        f"expected a LongTensor of shape [3], got {getattr(drawn, 'dtype', type(drawn))} "
        f"of shape {list(getattr(drawn, 'shape', []))}")


@public_check("sample_next_token")
def frequencies_follow_the_softmax(sample_next_token):
    scores = torch.tensor([0.7, 0.3]).log().expand(4000, 2)
    drawn = sample_next_token(scores, generator=torch.Generator().manual_seed(2))
    share = (drawn == 0).float().mean().item()
    assert 0.65 < share < 0.75, f"token 0 has probability 0.7 but was drawn {share:.1%} of the time"


@public_check("sample_next_token")
def top_k_of_one_is_the_argmax(sample_next_token):
    scores = torch.randn(50, 20, generator=torch.Generator().manual_seed(3))
    drawn = sample_next_token(scores, temperature=2.0, top_k=1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(drawn, scores.argmax(dim=-1)), "with top_k=1 every draw must be the row's argmax"


@public_check("stochastic_generate")
def is_reproducible_with_a_seeded_generator(stochastic_generate):
    qwen = zoo.tiny_model("qwen2")
    tok = zoo.tiny_tokenizer()
    first = stochastic_generate(qwen, tok, "Large language", 6, generator=torch.Generator().manual_seed(5))
    again = stochastic_generate(qwen, tok, "Large language", 6, generator=torch.Generator().manual_seed(5))
    assert_same_text(again, first, what="a second run with the same seed")
    assert first.startswith("Large language"), f"the result must start with the prompt, got {first!r}"


# --- on the GPU (where one is present): the same answers, on the input's device ------------------


@public_check("greedy_generate", cuda=True)
def works_with_a_model_on_the_gpu(greedy_generate):
    same_on_gpu(greedy_generate, zoo.tiny_model("qwen2"), zoo.tiny_tokenizer(), "Attention lets", 5,
                what="greedy_generate(tiny qwen2, 'Attention lets', 5)")


@public_check("apply_temperature", cuda=True)
def scales_gpu_logits(apply_temperature):
    same_on_gpu(apply_temperature, torch.tensor([[2.0, -1.0, 0.5]]), 0.5, what="apply_temperature([[2, -1, 0.5]], 0.5)")


@public_check("top_k_filter", cuda=True)
def filters_gpu_logits(top_k_filter):
    same_on_gpu(top_k_filter, torch.tensor([[0.1, 2.0, -3.0, 1.5], [5.0, 4.0, 3.0, 2.0]]), 2,
                what="top_k_filter(scores, k=2)")


@public_check("top_p_filter", cuda=True)
def filters_gpu_logits_by_probability(top_p_filter):
    same_on_gpu(top_p_filter, torch.tensor([[0.3, 0.5, 0.2], [0.1, 0.1, 0.8]]).log(), 0.6,
                what="top_p_filter(log-probabilities, p=0.6)")


@public_check("sample_next_token", cuda=True)
def draws_on_the_gpu_with_a_gpu_generator(sample_next_token):
    scores = torch.randn(4, 20, generator=torch.Generator().manual_seed(3))
    same_on_gpu(sample_next_token, scores, top_k=1, generator=torch.Generator().manual_seed(4),
                what="sample_next_token(scores, top_k=1, generator=...) (the argmax)")


@public_check("stochastic_generate", cuda=True)
def generates_with_a_model_on_the_gpu(stochastic_generate):
    same_on_gpu(stochastic_generate, zoo.tiny_model("qwen2"), zoo.tiny_tokenizer(), "Large language", 6, top_k=1,
                generator=torch.Generator().manual_seed(5), what="stochastic_generate(tiny qwen2, top_k=1)")
