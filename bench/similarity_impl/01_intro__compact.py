import torch
import torch.nn.functional as F

NEG = float("-inf")


@torch.no_grad()
def _loop(model, tokenizer, prompt, n, pick):
    ids = tokenizer.encode(prompt, return_tensors="pt").to(model.device)
    for _ in range(n):
        ids = torch.cat([ids, pick(model(input_ids=ids).logits[:, -1]).view(-1, 1)], -1)
    return tokenizer.decode(ids[0])


def greedy_generate(model, tokenizer, prompt, gen_len):
    return _loop(model, tokenizer, prompt, gen_len, lambda scores: scores.argmax(-1))


def apply_temperature(logits, temperature):
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    return logits.div(temperature)


def top_k_filter(logits, k):
    k = min(k, logits.size(-1))
    kth_best = logits.topk(k, dim=-1).values[:, [-1]]
    return torch.where(logits >= kth_best, logits, torch.full_like(logits, NEG))


def top_p_filter(logits, p):
    values, index = logits.sort(dim=-1, descending=True)
    mass_before = F.softmax(values, dim=-1).cumsum(-1) - F.softmax(values, dim=-1)
    keep = torch.empty_like(mass_before, dtype=torch.bool).scatter(-1, index, mass_before < p)
    return logits.where(keep, torch.tensor(NEG, dtype=logits.dtype))


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    logits = apply_temperature(logits, temperature)
    logits = logits if top_k is None else top_k_filter(logits, top_k)
    logits = logits if top_p is None else top_p_filter(logits, top_p)
    return torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]


def stochastic_generate(model, tokenizer, prompt, gen_len, temperature=1.0, top_k=None, top_p=None,
                        generator=None):
    draw = lambda scores: sample_next_token(scores, temperature, top_k, top_p, generator)
    return _loop(model, tokenizer, prompt, gen_len, draw)
