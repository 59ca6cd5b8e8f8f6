import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(seq_len, device=None):
    rows = torch.arange(seq_len, device=device).view(-1, 1)
    cols = torch.arange(seq_len, device=device).view(1, -1)
    return cols <= rows


def _masked_scores(scores, keep):
    return scores.masked_fill(~keep, float("-inf"))


def scaled_dot_product_attention(q, k, v, causal=False, mask=None):
    scores = q @ k.transpose(-2, -1)
    scores = scores * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        scores = _masked_scores(scores, causal_mask(scores.shape[-2], scores.device))
    if mask is not None:
        scores = _masked_scores(scores, mask)
    attention = F.softmax(scores, dim=-1)
    return attention @ v


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        assert d_model % n_heads == 0, "d_model is not a multiple of n_heads"
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def _split(self, t):
        batch, length, width = t.shape
        return t.view(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2)

    def _merge(self, t):
        batch, heads, length, size = t.shape
        return t.transpose(1, 2).contiguous().view(batch, length, heads * size)

    def forward(self, x, causal=True):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        heads = scaled_dot_product_attention(self._split(q), self._split(k), self._split(v), causal=causal)
        return self.proj(self._merge(heads))


def _rotate_half(t):
    first, second = t.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x, positions, base=10000.0):
    dim = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dim, 2, device=x.device).float() / dim)
    angles = torch.outer(positions.to(x.device).float().flatten(), inv_freq).view(*positions.shape, dim // 2)
    angles = torch.cat((angles, angles), dim=-1)
    xf = x.float()
    return (xf * angles.cos() + _rotate_half(xf) * angles.sin()).type_as(x)


def batched_greedy_generate(model, tokenizer, prompts, gen_len):
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(prompts, padding=True, return_tensors="pt").to(model.device)
    ids, attention = batch.input_ids, batch.attention_mask
    for step in range(gen_len):
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
        chosen = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        ids = torch.cat((ids, chosen), dim=-1)
        attention = torch.cat((attention, torch.ones_like(chosen)), dim=-1)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def generate_with_kv_cache(model, input_ids, gen_len):
    sequence, feed, past = input_ids, input_ids, None
    for step in range(gen_len):
        with torch.no_grad():
            result = model(input_ids=feed, cache=past, use_cache=True)
        past = result.cache
        feed = result.logits[:, -1:, :].argmax(dim=-1)
        sequence = torch.cat((sequence, feed), dim=-1)
    return sequence
