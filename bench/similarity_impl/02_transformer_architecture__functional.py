import torch
from torch import einsum, nn


def causal_mask(seq_len, device=None):
    return torch.tril(torch.ones((seq_len, seq_len), device=device)).bool()


def scaled_dot_product_attention(q, k, v, causal=False, mask=None):
    logits = einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    allowed = torch.ones_like(logits, dtype=torch.bool)
    allowed = allowed & causal_mask(logits.shape[-1], logits.device)[-logits.shape[-2]:] if causal else allowed
    allowed = allowed if mask is None else allowed & mask
    return einsum("...qk,...kd->...qd", logits.masked_fill(allowed.logical_not(), -torch.inf).softmax(-1), v)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"{n_heads=} does not divide {d_model=}")
        self.h = n_heads
        self.w = nn.ParameterDict({name: nn.Parameter(torch.randn(d_model, d_model) / d_model ** 0.5)
                                   for name in ("q", "k", "v", "o")})

    def forward(self, x, causal=True):
        b, t, d = x.shape
        q, k, v = (einsum("btd,ed->bte", x, self.w[n]).unflatten(-1, (self.h, d // self.h)).movedim(2, 1)
                   for n in "qkv")
        y = scaled_dot_product_attention(q, k, v, causal=causal).movedim(1, 2).flatten(2)
        return einsum("btd,ed->bte", y, self.w["o"])


def apply_rope(x, positions, base=10000.0):
    d = x.shape[-1]
    freqs = torch.pow(base, -torch.linspace(0, 1, d // 2 + 1, device=x.device)[:-1])
    phase = einsum("...,f->...f", positions.to(device=x.device, dtype=torch.float32), freqs)
    real, imag = x.float().split(d // 2, -1)
    rotated = torch.complex(real, imag) * torch.polar(torch.ones_like(phase), phase)
    return torch.cat((rotated.real, rotated.imag), -1).to(x.dtype)


@torch.no_grad()
def batched_greedy_generate(model, tokenizer, prompts, gen_len):
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    ids, keep = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
    for _ in range(gen_len):
        pos = torch.clamp_min(keep.long().cumsum(1) - 1, 0)
        nxt = model(input_ids=ids, attention_mask=keep, position_ids=pos).logits[:, -1].argmax(-1, keepdim=True)
        ids, keep = torch.hstack((ids, nxt)), torch.hstack((keep, torch.ones_like(keep[:, :1])))
    return [tokenizer.decode(row, skip_special_tokens=True) for row in ids]


@torch.no_grad()
def generate_with_kv_cache(model, input_ids, gen_len):
    out, cache, step = [input_ids], None, input_ids
    for _ in range(gen_len):
        res = model(input_ids=step, cache=cache, use_cache=True)
        cache, step = res.cache, res.logits[:, -1].argmax(-1)[:, None]
        out.append(step)
    return torch.hstack(out)
