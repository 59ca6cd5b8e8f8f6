import itertools
from collections import Counter
from copy import deepcopy

import torch
from torch import nn


def param_bytes_by_dtype(model):
    unique = {t.untyped_storage().data_ptr(): t for t in model.parameters()}.values()
    return dict(sum((Counter({t.dtype: t.numel() * t.itemsize}) for t in unique), Counter()))


def model_size_mb(model):
    unique = {t.untyped_storage().data_ptr(): t for t in itertools.chain(model.parameters(), model.buffers())}
    return sum(map(lambda t: t.numel() * t.itemsize, unique.values())) / float(1 << 20)


def compare_precisions(model, input_ids):
    with torch.inference_mode():
        runs = {name: deepcopy(model).to(dt)(input_ids).logits.double()
                for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16))}
        ref = model(input_ids).logits.double()
    return {name: dict(token_agreement=torch.eq(out.argmax(-1), ref.argmax(-1)).double().mean().item(),
                       max_softmax_diff=torch.dist(out.softmax(-1), ref.softmax(-1), p=float("inf")).item())
            for name, out in runs.items()}


def absmax_quantize(x):
    scale = torch.where(x.abs().max() > 0, x.abs().max() / 127, torch.tensor(1.0, dtype=x.dtype, device=x.device))
    return torch.round(x / scale).clip(-127, 127).char(), scale


def absmax_dequantize(q, scale):
    return torch.mul(q.to(scale.dtype), scale)


def zeropoint_quantize(x):
    lo, hi = x.min().clip(max=0.0), x.max().clip(min=0.0)
    scale = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
    zero_point = torch.round(lo.neg() / scale).int()
    return torch.add(torch.round(x / scale), zero_point).clip(0, 255).byte(), scale, zero_point


def zeropoint_dequantize(q, scale, zero_point):
    return torch.sub(q.int(), zero_point).to(scale.dtype).mul(scale)


def fake_quantize_linear_layers(model, method):
    pairs = dict(absmax=(absmax_quantize, absmax_dequantize), zeropoint=(zeropoint_quantize, zeropoint_dequantize))
    try:
        quantize, dequantize = pairs[method]
    except KeyError:
        raise ValueError(f"no such method {method!r}") from None
    with torch.no_grad():
        for layer in filter(lambda m: isinstance(m, nn.Linear), model.modules()):
            layer.weight.set_(dequantize(*quantize(layer.weight)).to(layer.weight.dtype))
    return model
