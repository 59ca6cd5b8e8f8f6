import torch


class _Decoder:
    """Runs the model one token at a time and keeps the growing sequence."""

    def __init__(self, model, tokenizer, prompt):
        self.model = model
        self.tokenizer = tokenizer
        encoded = tokenizer(prompt, return_tensors="pt")
        self.sequence = encoded["input_ids"].to(model.device)

    def last_logits(self):
        with torch.no_grad():
            return self.model(input_ids=self.sequence).logits[:, -1, :]

    def extend(self, token):
        self.sequence = torch.cat((self.sequence, token.reshape(1, 1).to(self.sequence.device)), dim=1)

    def text(self):
        return self.tokenizer.decode(self.sequence[0].tolist())


def greedy_generate(model, tokenizer, prompt, gen_len):
    decoder = _Decoder(model, tokenizer, prompt)
    for step in range(gen_len):
        best = torch.argmax(decoder.last_logits(), dim=-1)
        decoder.extend(best)
    return decoder.text()


def apply_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError("the temperature has to be positive")
    return logits / temperature


def top_k_filter(logits, k):
    if k >= logits.shape[-1]:
        return logits.clone()
    threshold = torch.topk(logits, k, dim=-1).values.min(dim=-1, keepdim=True).values
    filtered = logits.clone()
    filtered[logits < threshold] = float("-inf")
    return filtered


def top_p_filter(logits, p):
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    probabilities = torch.softmax(ordered, dim=-1)
    running = torch.cumsum(probabilities, dim=-1)
    drop_sorted = running - probabilities >= p
    drop = torch.zeros_like(drop_sorted)
    drop.scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    scores = apply_temperature(logits, temperature)
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    probabilities = torch.softmax(scores, dim=-1)
    chosen = torch.multinomial(probabilities, num_samples=1, generator=generator)
    return chosen.squeeze(-1)


def stochastic_generate(model, tokenizer, prompt, gen_len, temperature=1.0, top_k=None, top_p=None,
                        generator=None):
    decoder = _Decoder(model, tokenizer, prompt)
    for step in range(gen_len):
        token = sample_next_token(decoder.last_logits(), temperature=temperature, top_k=top_k, top_p=top_p,
                                  generator=generator)
        decoder.extend(token)
    return decoder.text()
