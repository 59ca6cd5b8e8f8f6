import torch
import torch.nn.functional as F

NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])


def vectorwise_quantize(x):
    s = x.float().abs().amax(-1, keepdim=True)
    return torch.nan_to_num(x.float() * 127 / s).round().to(torch.int8), s.squeeze(-1)


def outlier_columns(x, threshold=6.0):
    return (x.abs() >= threshold).any(0).nonzero(as_tuple=True)[0]


def int8_linear_with_outliers(x, weight, bias=None, threshold=6.0):
    cols = outlier_columns(x, threshold)
    regular = torch.ones(x.shape[-1], dtype=torch.bool, device=x.device).index_fill(0, cols, False)
    (qa, sa), (qb, sb) = vectorwise_quantize(x[:, regular]), vectorwise_quantize(weight[:, regular])
    y = (qa.double() @ qb.double().T) * torch.outer(sa, sb).double() / 16129
    y = y.to(x.dtype) + x[:, cols] @ weight[:, cols].T
    return y if bias is None else y + bias


def nf4_quantize(w, blocksize=64):
    n = w.numel()
    blocks = F.pad(w.flatten().float(), (0, (-n) % blocksize)).view(-1, blocksize)
    absmax = blocks.abs().amax(1)
    normed = blocks / absmax.clamp_min(1e-12)[:, None]
    codes = torch.bucketize(normed, (NF4[1:] + NF4[:-1]) / 2)
    return codes.flatten()[:n].reshape(w.shape).to(torch.uint8), absmax


def nf4_dequantize(codes, absmax, blocksize=64):
    flat = NF4[codes.flatten().long()]
    scale = absmax.repeat_interleave(blocksize)[: flat.numel()]
    return (flat * scale).view_as(codes)


def perplexity(model, tokenizer, texts):
    losses, tokens = [], 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model(ids, labels=ids)
        n = ids.shape[1] - 1
        losses.append(out.loss.float() * n)
        tokens += n
    return torch.exp(torch.stack(losses).sum() / tokens).item()
