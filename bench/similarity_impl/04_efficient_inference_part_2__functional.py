import torch
from torch.nn.functional import cross_entropy, pad


def vectorwise_quantize(x):
    amax = x.float().abs().amax(dim=1)
    return (x.float() * (127 / amax.where(amax != 0, 1.0))[:, None]).round().char(), amax


def outlier_columns(x, threshold=6.0):
    return torch.nonzero(torch.any(x.abs().ge(threshold).flatten(0, -2), 0)).flatten()


def int8_linear_with_outliers(x, weight, bias=None, threshold=6.0):
    hot = torch.zeros(x.size(-1), dtype=torch.bool, device=x.device).index_fill_(0, outlier_columns(x, threshold), True)
    (xa, sx), (wa, sw) = map(vectorwise_quantize, (x[:, ~hot], weight[:, ~hot]))
    low = torch.einsum("ik,jk->ij", xa.float(), wa.float()) * torch.einsum("i,j->ij", sx, sw) / 127 ** 2
    y = low.type(x.dtype) + torch.einsum("ik,jk->ij", x[:, hot], weight[:, hot])
    return y.add(bias) if bias is not None else y


def nf4_quantize(w, blocksize=64):
    b = pad(w.float().ravel(), (0, -w.numel() % blocksize)).unflatten(0, (-1, blocksize))
    scale = b.abs().amax(-1)
    idx = torch.searchsorted(NF4_CODE.to(w.device).lerp(NF4_CODE.to(w.device).roll(-1), 0.5)[:-1],
                             b / scale.clamp(min=torch.finfo(torch.float32).tiny)[:, None])
    return idx.ravel()[: w.numel()].view(w.shape).byte(), scale


def nf4_dequantize(codes, absmax, blocksize=64):
    n = codes.numel()
    return (NF4_CODE.to(codes.device)[codes.long().ravel()]
            * absmax.repeat_interleave(blocksize)[:n]).view(codes.shape)


@torch.no_grad()
def perplexity(model, tokenizer, texts):
    parts = [(cross_entropy(model(ids).logits[0, :-1].float(), ids[0, 1:], reduction="sum"), ids.shape[1] - 1)
             for ids in (tokenizer(t, return_tensors="pt").input_ids.to(model.device) for t in texts)]
    return torch.exp(sum(nll for nll, _ in parts) / sum(n for _, n in parts)).item()
