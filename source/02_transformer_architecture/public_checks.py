"""Public checks for 02_transformer_architecture: small cases whose answers can be worked out by hand.

They catch the common slips early (an inverted or shifted mask, a missing scale, heads merged in the
wrong order, the interleaved RoPE convention, right padding); the hidden suite grades the full contract.
"""

import math

import torch

from autograder import zoo
from autograder.checks import check, public_check, same_on_gpu  # noqa: F401  (`check` is what the notebook imports)
from autograder.testing import assert_close, assert_same_text


@public_check("causal_mask")
def is_lower_triangular_and_boolean(causal_mask):
    wanted = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    assert_close(causal_mask(3), wanted, what="causal_mask(3)")


@public_check("scaled_dot_product_attention")
def equal_scores_average_the_values(scaled_dot_product_attention):
    q, k = torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2)
    v = torch.arange(8.0).reshape(1, 1, 4, 2)
    everywhere = v.mean(dim=2, keepdim=True).expand_as(v)
    assert_close(scaled_dot_product_attention(q, k, v), everywhere,
                 what="all-zero q and k: every query averages all values")
    running_mean = v.cumsum(dim=2) / torch.arange(1.0, 5.0).reshape(1, 1, 4, 1)
    assert_close(scaled_dot_product_attention(q, k, v, causal=True), running_mean,
                 what="all-zero q and k, causal=True: query i averages values 0..i")


@public_check("scaled_dot_product_attention")
def scales_scores_by_the_square_root_of_head_dim(scaled_dot_product_attention):
    q = torch.ones(1, 1, 1, 4)
    k = torch.stack([torch.ones(4), torch.zeros(4)]).reshape(1, 1, 2, 4)  # scores 4 and 0, scaled: 2 and 0
    v = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1)
    weight_of_first_key = 1 / (1 + math.exp(-2.0))
    assert_close(scaled_dot_product_attention(q, k, v), torch.tensor([[[[weight_of_first_key]]]]),
                 what="raw scores [4, 0] with head_dim 4 (softmax of [4, 0] / sqrt(4))")


@public_check("scaled_dot_product_attention")
def a_mask_hides_keys(scaled_dot_product_attention):
    q, k = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 2)
    v = torch.tensor([1.0, 2.0, 6.0]).reshape(1, 1, 3, 1)
    mask = torch.tensor([True, False, True])
    assert_close(scaled_dot_product_attention(q, k, v, mask=mask), torch.full((1, 1, 2, 1), 3.5),
                 what="mask [True, False, True]: the average skips the second value")


@public_check("MultiHeadSelfAttention")
def has_bias_free_projections_and_keeps_the_shape(MultiHeadSelfAttention):
    mha = MultiHeadSelfAttention(32, 4)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        layer = getattr(mha, name, None)
        assert isinstance(layer, torch.nn.Linear), f"{name} must be an nn.Linear"
        assert layer.bias is None, f"{name} must have no bias (bias=False), as in Llama"
    out = mha(torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0)))
    assert tuple(out.shape) == (2, 5, 32), f"output shape {list(out.shape)}, expected [2, 5, 32]"


@public_check("MultiHeadSelfAttention")
def the_future_does_not_change_the_past(MultiHeadSelfAttention):
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(32, 4)
    x = torch.randn(1, 6, 32)
    changed = x.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        before, after = mha(x), mha(changed)
    assert_close(after[:, :-1], before[:, :-1],
                 what="outputs of positions 0-4 after changing token 5 (causal attention must ignore it)")


@public_check("apply_rope")
def position_zero_is_the_identity(apply_rope):
    x = torch.randn(1, 2, 1, 8, generator=torch.Generator().manual_seed(1))
    assert_close(apply_rope(x, torch.tensor([0])), x, what="apply_rope at position 0")


@public_check("apply_rope")
def rotates_x_i_together_with_x_i_plus_half(apply_rope):
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    # The first frequency is base**0 = 1, so at position 1 the pair (x[0], x[2]) turns by 1 radian.
    wanted = torch.tensor([math.cos(1.0), 0.0, math.sin(1.0), 0.0]).reshape(1, 1, 1, 4)
    assert_close(apply_rope(x, torch.tensor([1])), wanted, what="apply_rope([1, 0, 0, 0], position 1)")


@public_check("apply_rope")
def scores_depend_only_on_the_distance(apply_rope):
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    near = (apply_rope(q, torch.tensor([5])) * apply_rope(k, torch.tensor([2]))).sum()
    far = (apply_rope(q, torch.tensor([105])) * apply_rope(k, torch.tensor([102]))).sum()
    assert_close(far, near, rtol=1e-4, atol=1e-4, what="q.k at positions (105, 102) versus (5, 2)")


@public_check("batched_greedy_generate")
def a_batch_equals_the_prompts_one_by_one(batched_greedy_generate):
    llama, tok = zoo.tiny_model("llama"), zoo.tiny_tokenizer()
    prompts = ["Padding", "Keys and values are cached per layer"]
    together = batched_greedy_generate(llama, tok, prompts, 4)
    assert isinstance(together, list) and len(together) == 2, f"expected a list of 2 strings, got {together!r}"
    for prompt, text in zip(prompts, together):
        assert_same_text(text, batched_greedy_generate(llama, tok, [prompt], 4)[0],
                         what=f"the batched result for {prompt!r} compared with generating it alone")
        assert text.startswith(prompt), f"{text!r} must start with its prompt {prompt!r}"


@public_check("generate_with_kv_cache")
def equals_recomputing_everything(generate_with_kv_cache):
    qwen = zoo.tiny_model("qwen2")
    start = torch.tensor([[11, 42, 7, 300]])
    tokens = start
    with torch.no_grad():
        for _ in range(5):
            next_id = qwen(tokens).logits[0, -1].argmax()
            tokens = torch.cat([tokens, next_id.view(1, 1)], dim=1)
    assert_close(generate_with_kv_cache(qwen, start, 5), tokens, what="generate_with_kv_cache(tiny qwen2, 4 tokens, 5)")


# --- on the GPU (where one is present): the same answers, on the input's device ------------------


@public_check("causal_mask", cuda=True)
def builds_the_mask_on_the_requested_device(causal_mask):
    same_on_gpu(causal_mask, 4, device=torch.device("cpu"), what="causal_mask(4, device=...)")


@public_check("scaled_dot_product_attention", cuda=True)
def attends_on_the_inputs_device(scaled_dot_product_attention):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g) for _ in range(3))
    mask = torch.tensor([True, True, True, False, True])
    same_on_gpu(scaled_dot_product_attention, q, k, v, causal=True, mask=mask,
                what="scaled_dot_product_attention(q, k, v, causal=True, mask=...)")


def _forward(module, x):
    with torch.no_grad():
        return module(x)


@public_check("MultiHeadSelfAttention", cuda=True)
def runs_as_a_module_moved_to_the_gpu(MultiHeadSelfAttention):
    torch.manual_seed(0)
    same_on_gpu(_forward, MultiHeadSelfAttention(32, 4), torch.randn(2, 5, 32),
                what="MultiHeadSelfAttention(32, 4) moved with .to(device)")


@public_check("apply_rope", cuda=True)
def rotates_on_the_inputs_device(apply_rope):
    x = torch.randn(1, 2, 3, 8, generator=torch.Generator().manual_seed(4))
    same_on_gpu(apply_rope, x, torch.tensor([0, 1, 7]), what="apply_rope(x, positions [0, 1, 7])")


@public_check("batched_greedy_generate", cuda=True)
def generates_a_batch_with_a_model_on_the_gpu(batched_greedy_generate):
    same_on_gpu(batched_greedy_generate, zoo.tiny_model("llama"), zoo.tiny_tokenizer(),
                ["Padding", "Keys and values are cached per layer"], 4,
                what="batched_greedy_generate(tiny llama, 2 prompts, 4)")


@public_check("generate_with_kv_cache", cuda=True)
def decodes_with_a_model_on_the_gpu(generate_with_kv_cache):
    same_on_gpu(generate_with_kv_cache, zoo.tiny_model("qwen2"), torch.tensor([[11, 42, 7, 300]]), 5,
                what="generate_with_kv_cache(tiny qwen2, 4 tokens, 5)")
