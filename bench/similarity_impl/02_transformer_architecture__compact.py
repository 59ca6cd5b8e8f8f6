import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def causal_mask(seq_len, device=None):
    idx = torch.arange(seq_len, device=device)
    return idx[None, :] <= idx[:, None]


def scaled_dot_product_attention(q, k, v, causal=False, mask=None):
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
    keep = mask if mask is not None else torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device)
    if causal:
        keep = keep & causal_mask(s.shape[-2], s.device)
    return torch.einsum("bhqk,bhkd->bhqd", F.softmax(s.masked_fill(~keep, float("-inf")), dim=-1), v)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be a multiple of n_heads"
        self.h = n_heads
        self.qkv = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, causal=True):
        q, k, v = (rearrange(lin(x), "b s (h d) -> b h s d", h=self.h) for lin in self.qkv)
        return self.proj(rearrange(scaled_dot_product_attention(q, k, v, causal), "b h s d -> b s (h d)"))


def apply_rope(x, positions, base=10000.0):
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device).float() / d)
    ang = torch.outer(positions.to(x.device).float(), inv).repeat(1, 2)
    x1, x2 = x.float()[..., : d // 2], x.float()[..., d // 2:]
    return (x.float() * ang.cos() + torch.cat((-x2, x1), -1) * ang.sin()).type_as(x)


@torch.no_grad()
def batched_greedy_generate(model, tokenizer, prompts, gen_len):
    enc = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt").to(model.device)
    ids, att = enc.input_ids, enc.attention_mask
    for _ in range(gen_len):
        pos = att.long().cumsum(-1).sub(1).clamp(min=0)
        nxt = model(ids, attention_mask=att, position_ids=pos).logits[:, -1].argmax(-1, keepdim=True)
        ids, att = torch.cat((ids, nxt), 1), F.pad(att, (0, 1), value=1)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


@torch.no_grad()
def generate_with_kv_cache(model, input_ids, gen_len):
    out, feed, cache = [input_ids], input_ids, None
    for _ in range(gen_len):
        res = model(input_ids=feed, cache=cache, use_cache=True)
        feed, cache = res.logits[:, -1:].argmax(-1), res.cache
        out.append(feed)
    return torch.cat(out, dim=1)
