import torch


def greedy_generate(model, tokenizer, prompt, gen_len):
    # encode the prompt and move it to wherever the model lives
    token_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        step = 0
        while step < gen_len:
            all_logits = model(token_ids).logits
            last_position = all_logits[0, -1, :]
            best_token = int(torch.argmax(last_position))
            new_column = torch.tensor([[best_token]], device=token_ids.device)
            token_ids = torch.cat((token_ids, new_column), dim=1)
            step = step + 1
    return tokenizer.decode(token_ids[0])


def apply_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError("temperature has to be strictly positive, got " + str(temperature))
    scaled = logits / temperature
    return scaled.to(logits.dtype)


def top_k_filter(logits, k):
    result = logits.clone()
    vocab_size = logits.shape[-1]
    if k >= vocab_size:
        return result
    for row in range(logits.shape[0]):
        ordered, _ = torch.sort(logits[row], descending=True)
        threshold = ordered[k - 1]
        for column in range(vocab_size):
            if logits[row, column] < threshold:
                result[row, column] = float("-inf")
    return result


def top_p_filter(logits, p):
    probabilities = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probabilities, dim=-1, descending=True)
    running_total = torch.cumsum(sorted_probs, dim=-1)
    # a token is dropped when the tokens before it already reach p
    drop_sorted = (running_total - sorted_probs) >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted)
    drop.scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    current = apply_temperature(logits, temperature)
    if top_k is not None:
        current = top_k_filter(current, top_k)
    if top_p is not None:
        current = top_p_filter(current, top_p)
    distribution = torch.softmax(current, dim=-1)
    picked = torch.multinomial(distribution, num_samples=1, generator=generator)
    return picked.squeeze(-1)


def stochastic_generate(model, tokenizer, prompt, gen_len, temperature=1.0, top_k=None, top_p=None,
                        generator=None):
    token_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        for _ in range(gen_len):
            scores = model(token_ids).logits[:, -1, :]
            chosen = sample_next_token(scores, temperature, top_k, top_p, generator)
            token_ids = torch.cat((token_ids, chosen.unsqueeze(-1)), dim=1)
    return tokenizer.decode(token_ids[0])
