import math

import torch


def _row_absmax(matrix):
    return torch.max(torch.abs(matrix.to(torch.float32)), dim=1).values


def vectorwise_quantize(x):
    row_max = _row_absmax(x)
    safe = torch.where(row_max > 0, row_max, torch.ones_like(row_max))
    codes = torch.round(x.to(torch.float32) / safe.unsqueeze(1) * 127.0)
    return codes.to(torch.int8), row_max


def outlier_columns(x, threshold=6.0):
    flat = x.reshape(-1, x.shape[-1])
    column_max = torch.max(torch.abs(flat), dim=0).values
    return torch.where(column_max >= threshold)[0]


def _split_columns(width, outliers, device):
    is_outlier = torch.zeros(width, dtype=torch.bool, device=device)
    is_outlier[outliers] = True
    return torch.where(~is_outlier)[0], outliers


def int8_linear_with_outliers(x, weight, bias=None, threshold=6.0):
    regular, outliers = _split_columns(x.shape[1], outlier_columns(x, threshold), x.device)
    x_codes, x_scale = vectorwise_quantize(x[:, regular])
    w_codes, w_scale = vectorwise_quantize(weight[:, regular])
    accumulated = torch.matmul(x_codes.to(torch.int32), w_codes.to(torch.int32).t())
    int8_part = accumulated.to(torch.float32) * (x_scale.unsqueeze(1) * w_scale.unsqueeze(0)) / (127.0 * 127.0)
    outlier_part = torch.matmul(x[:, outliers], weight[:, outliers].t())
    result = int8_part.to(x.dtype) + outlier_part
    if bias is not None:
        result = result + bias
    return result


def _blocks(w, blocksize):
    flat = w.reshape(-1).to(torch.float32)
    missing = math.ceil(flat.numel() / blocksize) * blocksize - flat.numel()
    padded = torch.cat([flat, torch.zeros(missing, dtype=flat.dtype, device=flat.device)])
    return padded.reshape(-1, blocksize)


def nf4_quantize(w, blocksize=64):
    blocks = _blocks(w, blocksize)
    absmax = torch.max(torch.abs(blocks), dim=1).values
    normalised = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax)).unsqueeze(1)
    levels = NF4_CODE.to(w.device)
    distance = torch.abs(normalised.unsqueeze(-1) - levels)
    codes = torch.argmin(distance, dim=-1).reshape(-1)[: w.numel()]
    return codes.reshape(w.shape).to(torch.uint8), absmax


def nf4_dequantize(codes, absmax, blocksize=64):
    levels = NF4_CODE.to(codes.device)
    values = levels[codes.reshape(-1).to(torch.long)]
    block_of = torch.arange(values.numel(), device=codes.device) // blocksize
    return (values * absmax[block_of]).reshape(codes.shape)


def perplexity(model, tokenizer, texts):
    total_nll = 0.0
    total_tokens = 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"].to(model.device)
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].to(torch.float32)
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = ids[0, 1:]
        total_nll -= log_probs.gather(1, targets.unsqueeze(1)).sum().item()
        total_tokens += targets.numel()
    return math.exp(total_nll / total_tokens)
