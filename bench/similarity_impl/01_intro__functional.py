from functools import reduce

import torch
from torch.nn.functional import log_softmax


def _decode_steps(model, ids, steps, choose):
    return reduce(lambda seq, _: torch.hstack((seq, choose(model(seq).logits[:, -1]).unsqueeze(0))), range(steps), ids)


def greedy_generate(model, tokenizer, prompt, gen_len):
    with torch.inference_mode():
        ids = torch.tensor([tokenizer.encode(prompt)], device=model.device)
        out = _decode_steps(model, ids, gen_len, lambda row: row.max(-1).indices)
    return tokenizer.decode(out.squeeze(0))


def apply_temperature(logits, temperature):
    assert temperature > 0, "temperature <= 0"
    return torch.mul(logits, 1.0 / temperature)


def top_k_filter(logits, k):
    smallest_kept = torch.kthvalue(logits, max(1, logits.shape[-1] - k + 1), dim=-1, keepdim=True).values
    return logits.masked_fill(logits.lt(smallest_kept), -torch.inf)


def top_p_filter(logits, p):
    logp_sorted, where = logits.sort(-1, descending=True)
    before = torch.logcumsumexp(log_softmax(logp_sorted, -1), -1).exp().roll(1, -1)
    before[..., 0] = 0
    unsorted = before.gather(-1, where.argsort(-1))
    return torch.where(unsorted < p, logits, -torch.inf)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    steps = [lambda z: apply_temperature(z, temperature),
             (lambda z: top_k_filter(z, top_k)) if top_k is not None else (lambda z: z),
             (lambda z: top_p_filter(z, top_p)) if top_p is not None else (lambda z: z)]
    scores = reduce(lambda z, f: f(z), steps, logits)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).flatten()


def stochastic_generate(model, tokenizer, prompt, gen_len, temperature=1.0, top_k=None, top_p=None,
                        generator=None):
    with torch.inference_mode():
        ids = torch.tensor([tokenizer.encode(prompt)], device=model.device)
        pick = lambda row: sample_next_token(row, temperature, top_k, top_p, generator)
        out = _decode_steps(model, ids, gen_len, pick)
    return tokenizer.decode(out.squeeze(0))
