import math

import torch
from torch import nn


def causal_mask(seq_len, device=None):
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool, device=device)
    for query in range(seq_len):
        for key in range(query + 1):
            mask[query, key] = True
    return mask


def scaled_dot_product_attention(q, k, v, causal=False, mask=None):
    head_dim = q.size(-1)
    weights = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
    allowed = torch.ones(weights.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed & causal_mask(q.size(-2), q.device)
    if mask is not None:
        allowed = allowed & mask
    weights = weights.masked_fill(allowed == False, -float("inf"))
    weights = torch.softmax(weights, dim=-1)
    return torch.matmul(weights, v)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError("n_heads must divide d_model")
        self.heads = n_heads
        self.size_per_head = d_model // n_heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, causal=True):
        b, s, d = x.shape
        q = self.query(x).reshape(b, s, self.heads, self.size_per_head).permute(0, 2, 1, 3)
        k = self.key(x).reshape(b, s, self.heads, self.size_per_head).permute(0, 2, 1, 3)
        v = self.value(x).reshape(b, s, self.heads, self.size_per_head).permute(0, 2, 1, 3)
        attended = scaled_dot_product_attention(q, k, v, causal=causal)
        merged = attended.permute(0, 2, 1, 3).reshape(b, s, d)
        return self.output(merged)


def apply_rope(x, positions, base=10000.0):
    half = x.shape[-1] // 2
    exponents = torch.arange(half, dtype=torch.float32, device=x.device) * 2 / x.shape[-1]
    frequencies = 1.0 / (base ** exponents)
    theta = positions.float().to(x.device).unsqueeze(-1) * frequencies
    cos = torch.cos(theta)
    sin = torch.sin(theta)
    x_float = x.to(torch.float32)
    left = x_float[..., :half]
    right = x_float[..., half:]
    rotated_left = left * cos - right * sin
    rotated_right = right * cos + left * sin
    return torch.cat([rotated_left, rotated_right], dim=-1).to(x.dtype)


def batched_greedy_generate(model, tokenizer, prompts, gen_len):
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    input_ids = encoded["input_ids"].to(model.device)
    attention = encoded["attention_mask"].to(model.device)
    with torch.no_grad():
        for i in range(gen_len):
            position_ids = torch.cumsum(attention, dim=1) - 1
            position_ids[attention == 0] = 0
            output = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids)
            next_tokens = torch.argmax(output.logits[:, -1, :], dim=-1)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
            attention = torch.cat([attention, torch.ones((attention.shape[0], 1), dtype=attention.dtype,
                                                         device=attention.device)], dim=1)
    texts = []
    for row in input_ids:
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


def generate_with_kv_cache(model, input_ids, gen_len):
    generated = input_ids
    cache = None
    step_input = input_ids
    with torch.no_grad():
        for i in range(gen_len):
            result = model(input_ids=step_input, cache=cache, use_cache=True)
            cache = result.cache
            chosen = torch.argmax(result.logits[:, -1, :], dim=-1, keepdim=True)
            generated = torch.cat([generated, chosen], dim=-1)
            step_input = chosen
    return generated
