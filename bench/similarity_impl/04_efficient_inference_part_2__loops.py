import math

import torch

NF4_VALUES = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
              -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
              0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
              0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def vectorwise_quantize(x):
    x = x.to(torch.float32)
    rows = x.shape[0]
    codes = torch.zeros(x.shape, dtype=torch.int8)
    maxima = torch.zeros(rows, dtype=torch.float32)
    for r in range(rows):
        largest = x[r].abs().max()
        maxima[r] = largest
        if largest > 0:
            codes[r] = torch.round(x[r] / largest * 127).to(torch.int8)
    return codes, maxima


def outlier_columns(x, threshold=6.0):
    found = []
    for column in range(x.shape[1]):
        if (x[:, column].abs() >= threshold).any():
            found.append(column)
    return torch.tensor(found, dtype=torch.long)


def int8_linear_with_outliers(x, weight, bias=None, threshold=6.0):
    outliers = outlier_columns(x, threshold)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[outliers] = False
    x_codes, x_max = vectorwise_quantize(x[:, keep])
    w_codes, w_max = vectorwise_quantize(weight[:, keep])
    integer_product = torch.matmul(x_codes.to(torch.int32), w_codes.to(torch.int32).T)
    rescaled = integer_product.to(torch.float64) * x_max.double().unsqueeze(1) * w_max.double().unsqueeze(0)
    result = (rescaled / (127 * 127)).to(x.dtype)
    if len(outliers) > 0:
        result = result + torch.matmul(x[:, outliers], weight[:, outliers].T)
    if bias is not None:
        result = result + bias
    return result


def nf4_quantize(w, blocksize=64):
    table = torch.tensor(NF4_VALUES)
    values = w.reshape(-1).float()
    codes = torch.zeros(values.numel(), dtype=torch.uint8)
    block_max = []
    for start in range(0, values.numel(), blocksize):
        chunk = values[start:start + blocksize]
        biggest = chunk.abs().max()
        block_max.append(biggest)
        normalised = chunk / biggest if biggest > 0 else chunk * 0
        distances = (normalised.unsqueeze(1) - table.unsqueeze(0)).abs()
        codes[start:start + blocksize] = torch.argmin(distances, dim=1).to(torch.uint8)
    return codes.reshape(w.shape), torch.stack(block_max)


def nf4_dequantize(codes, absmax, blocksize=64):
    table = torch.tensor(NF4_VALUES)
    flat_codes = codes.reshape(-1).long()
    result = torch.empty(flat_codes.numel(), dtype=torch.float32)
    for block in range(absmax.numel()):
        start = block * blocksize
        result[start:start + blocksize] = table[flat_codes[start:start + blocksize]] * absmax[block]
    return result.reshape(codes.shape)


def perplexity(model, tokenizer, texts):
    nll_sum = 0.0
    count = 0
    model.eval()
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"].to(model.device)
            logits = model(ids).logits.float()
            log_probs = torch.log_softmax(logits[0, :-1], dim=-1)
            targets = ids[0, 1:]
            for position in range(targets.shape[0]):
                nll_sum -= log_probs[position, targets[position]].item()
                count += 1
    return math.exp(nll_sum / count)
