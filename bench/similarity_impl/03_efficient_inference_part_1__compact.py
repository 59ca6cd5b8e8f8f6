from copy import deepcopy

import torch
from torch import nn


def param_bytes_by_dtype(model):
    out = {}
    for p in model.parameters():
        out[p.dtype] = out.get(p.dtype, 0) + p.nbytes
    return out


def model_size_mb(model):
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.nbytes for t in tensors.values()) / 2**20


@torch.inference_mode()
def compare_precisions(model, input_ids):
    base = model(input_ids).logits.float()

    def stats(dtype):
        other = deepcopy(model).to(dtype)(input_ids).logits.float()
        return {"token_agreement": base.argmax(-1).eq(other.argmax(-1)).float().mean().item(),
                "max_softmax_diff": (base.softmax(-1) - other.softmax(-1)).abs().amax().item()}

    return {"fp16": stats(torch.float16), "bf16": stats(torch.bfloat16)}


def absmax_quantize(x):
    m = x.abs().amax()
    scale = m / 127 if m > 0 else torch.ones_like(m)
    return (x / scale).round().clamp(-127, 127).to(torch.int8), scale


def absmax_dequantize(q, scale):
    return scale * q


def zeropoint_quantize(x):
    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
    scale = (hi - lo) / 255 if hi > lo else torch.ones_like(hi)
    zp = (-lo / scale).round().long()
    return ((x / scale).round() + zp).clamp(0, 255).to(torch.uint8), scale, zp


def zeropoint_dequantize(q, scale, zero_point):
    return ((q.long() - zero_point) * scale).to(scale.dtype)


METHODS = {"absmax": (absmax_quantize, absmax_dequantize), "zeropoint": (zeropoint_quantize, zeropoint_dequantize)}


def fake_quantize_linear_layers(model, method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}")
    quant, dequant = METHODS[method]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight.copy_(dequant(*quant(layer.weight)))
    return model
