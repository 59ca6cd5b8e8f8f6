"""References for the hidden suite of 02_transformer_architecture, computed in the trusted process.

Each reference is a library's own implementation: torch's SDPA, `torch.nn.MultiheadAttention`, the
rotary code of transformers' Llama and Qwen2, `model.generate`. Known mistakes are re-created too,
so that a failing test can name the mistake it recognised instead of only printing numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, Qwen2Config
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from autograder.testing import ToleranceError, assert_close, reference

D_MODEL, N_HEADS = 64, 4


def random_tensor(*shape: int, seed: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard-normal values drawn on the CPU, so every device and dtype sees the same numbers."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype=dtype, device=device)


def random_qkv(batch: int, heads: int, seq: int, head_dim: int, *, key_len: int | None = None,
               seed: int = 0, dtype=torch.float32, device="cpu"):
    key_len = seq if key_len is None else key_len
    q = random_tensor(batch, heads, seq, head_dim, seed=seed, dtype=dtype, device=device)
    k = random_tensor(batch, heads, key_len, head_dim, seed=seed + 1, dtype=dtype, device=device)
    v = random_tensor(batch, heads, key_len, head_dim, seed=seed + 2, dtype=dtype, device=device)
    return q, k, v


def assert_close_or_diagnose(actual, expected, *, what: str, mistakes=(), hint: str = "", **tolerance):
    """`assert_close`; on failure, name the known mistake whose output the student's result matches.

    `mistakes` holds (wrong output, diagnosis) pairs; `hint` is said when no mistake matches.
    """
    try:
        assert_close(actual, expected, what=what, **tolerance)
    except ToleranceError as error:
        for wrong, diagnosis in mistakes:
            try:
                assert_close(actual, wrong, what=what, equal_nan=True, **tolerance)
            except ToleranceError:
                continue
            raise ToleranceError(f"{what}: {diagnosis}\n(details: {error})") from None
        if hint:
            raise ToleranceError(f"{error}\nHint: {hint}") from None
        raise


# ---- causal mask and attention ------------------------------------------------------------------

def allowed_positions(seq_len: int, *, shift: int = 0, device="cpu") -> torch.Tensor:
    """True where query i may attend to key j (j <= i); `shift` re-creates off-by-one masks."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril(shift)


def causal_mask_mistakes(seq_len: int):
    return [
        (allowed_positions(seq_len, shift=-1),
         "the diagonal is False, but every position must be allowed to attend to itself (j <= i, not j < i)."),
        (allowed_positions(seq_len, shift=1),
         "position i may attend to position i + 1: the future leaks in (use j <= i, not j <= i + 1)."),
        (~allowed_positions(seq_len),
         "the mask is inverted: True must mark the allowed positions (j <= i), False the future."),
    ]


@reference
def torch_attention(q, k, v, *, causal=False, mask=None):
    """torch's SDPA on fp32 copies (so half-precision inputs get the exact answer), cast back.
    With `causal` and `mask` together (torch's SDPA refuses both), a key is allowed where both allow it."""
    if causal and mask is not None:
        mask, causal = mask & allowed_positions(q.shape[-2], device=q.device), False
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
    return out.to(q.dtype)


def _hand_attention(q, k, v, allowed, *, scale: float, softmax_dim: int):
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(dim=softmax_dim) @ v.float()).to(q.dtype)


@reference
def attention_mistakes(q, k, v, *, causal=False, mask=None):
    """Outputs of the usual wrong attentions, each with what the student should check."""
    allowed = mask
    if causal:
        allowed = allowed_positions(q.shape[-2], device=q.device)
        if mask is not None:
            allowed = allowed & mask
    scale = 1 / math.sqrt(q.shape[-1])
    mistakes = [
        (_hand_attention(q, k, v, allowed, scale=1.0, softmax_dim=-1),
         "the scores are not scaled: divide q @ k^T by sqrt(head_dim) before the softmax."),
        (_hand_attention(q, k, v, allowed, scale=scale, softmax_dim=-2),
         "the softmax runs over the queries: each query's weights must sum to 1 over the keys (dim=-1)."),
    ]
    if causal and mask is not None:
        scaled = dict(scale=scale, softmax_dim=-1)
        mistakes += [
            (_hand_attention(q, k, v, mask, **scaled),
             "with causal=True and a mask, you applied only the mask: a key must be allowed by both."),
            (_hand_attention(q, k, v, allowed_positions(q.shape[-2], device=q.device), **scaled),
             "with causal=True and a mask, you applied only the causal mask: a key must be allowed by both."),
        ]
    if causal:
        for shift, problem in ((-1, "hides each position from itself"), (1, "lets each position see the next one")):
            off_by_one = allowed_positions(q.shape[-2], shift=shift, device=q.device)
            if mask is not None:
                off_by_one = off_by_one & mask
            mistakes.append((_hand_attention(q, k, v, off_by_one, scale=scale, softmax_dim=-1),
                             f"the causal mask is off by one: it {problem}; position i attends to j <= i."))
    return mistakes


@reference
def reference_multi_head_attention(state_dict: dict, x: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """`torch.nn.MultiheadAttention` carrying the same q/k/v/o weights (no biases, as in Llama)."""
    mha = torch.nn.MultiheadAttention(D_MODEL, N_HEADS, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([state_dict[f"{p}_proj.weight"] for p in "qkv"]))
        mha.out_proj.weight.copy_(state_dict["o_proj.weight"])
    mha = mha.to(device=x.device)
    future = ~allowed_positions(x.shape[1], device=x.device) if causal else None  # torch: True = blocked
    with torch.no_grad():
        out, _ = mha(x.float(), x.float(), x.float(), attn_mask=future, need_weights=False)
    return out.to(x.dtype)


def projection_weights(seed: int, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """A state dict for the student's module: four bias-free [d_model, d_model] projections."""
    scale = 1 / math.sqrt(D_MODEL)
    return {f"{p}_proj.weight": scale * random_tensor(D_MODEL, D_MODEL, seed=seed + i, dtype=dtype, device=device)
            for i, p in enumerate("qkvo")}


MHA_HINT = ("split d_model into heads with view(batch, seq, n_heads, head_dim).transpose(1, 2), attend per head, "
            "merge back with transpose(1, 2).reshape(batch, seq, d_model), then apply o_proj.")


# ---- rotary position embeddings -----------------------------------------------------------------

_ROTARY = {"llama": (LlamaConfig, LlamaRotaryEmbedding), "qwen2": (Qwen2Config, Qwen2RotaryEmbedding)}


@reference
def transformers_rope(x: torch.Tensor, positions: torch.Tensor, *, base: float, arch: str = "llama"):
    """RoPE exactly as transformers' Llama/Qwen2 attention applies it to queries, in fp32, cast back."""
    config_class, rotary_class = _ROTARY[arch]
    head_dim = x.shape[-1]
    config = config_class(hidden_size=head_dim * N_HEADS, num_attention_heads=N_HEADS, head_dim=head_dim,
                          rope_parameters={"rope_type": "default", "rope_theta": base})
    rotary = rotary_class(config).to(x.device)
    x32 = x.float()
    cos, sin = rotary(x32, positions.to(x.device)[None])
    rotated, _ = apply_rotary_pos_emb(x32, x32, cos, sin)
    return rotated.to(x.dtype)


def interleaved_rope(x: torch.Tensor, positions: torch.Tensor, *, base: float):
    """The GPT-J / original-paper convention: rotates pairs (x[2i], x[2i+1]); a mistake here."""
    head_dim = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=x.device) / head_dim)
    angles = positions.to(x.device).float()[:, None] * inv_freq
    even, odd = x.float()[..., 0::2], x.float()[..., 1::2]
    rotated = torch.stack([even * angles.cos() - odd * angles.sin(), even * angles.sin() + odd * angles.cos()], -1)
    return rotated.flatten(-2).to(x.dtype)


@reference
def rope_mistakes(x, positions, *, base):
    return [(interleaved_rope(x, positions, base=base),
             "you rotate interleaved pairs (x[2i], x[2i+1]); Llama and Qwen use the rotate-half convention "
             "that pairs x[i] with x[i + head_dim/2].")]


# ---- decoding -----------------------------------------------------------------------------------

@reference
def generate_per_prompt(model, tokenizer, prompts: list[str], gen_len: int) -> list[str]:
    """`model.generate(do_sample=False)` on each prompt alone: no padding can interfere."""
    texts = []
    for prompt in prompts:
        encoded = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            ids = model.generate(**encoded, do_sample=False, max_new_tokens=gen_len)
        texts.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    return texts


@reference
def greedy_without_cache(model, input_ids: torch.Tensor, gen_len: int) -> torch.Tensor:
    """Greedy decoding that runs the full forward over the whole sequence at every step, no cache."""
    ids = input_ids
    with torch.no_grad():
        for _ in range(gen_len):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=-1)
    return ids

