import copy

import torch
import torch.nn as nn


def _unique_tensors(tensors):
    seen = set()
    for tensor in tensors:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        yield tensor


def _size_in_bytes(tensor):
    return tensor.numel() * tensor.element_size()


def param_bytes_by_dtype(model):
    totals = {}
    for tensor in _unique_tensors(model.parameters()):
        if tensor.dtype not in totals:
            totals[tensor.dtype] = 0
        totals[tensor.dtype] += _size_in_bytes(tensor)
    return totals


def model_size_mb(model):
    everything = list(model.parameters()) + list(model.buffers())
    total = 0
    for tensor in _unique_tensors(everything):
        total += _size_in_bytes(tensor)
    return total / (1024 * 1024)


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits.to(torch.float32)


def compare_precisions(model, input_ids):
    reference = _logits(model, input_ids)
    reference_tokens = torch.argmax(reference, dim=-1)
    reference_probs = torch.softmax(reference, dim=-1)
    report = {}
    for label, dtype in [("fp16", torch.float16), ("bf16", torch.bfloat16)]:
        lowered = copy.deepcopy(model).to(dtype=dtype)
        logits = _logits(lowered, input_ids)
        same = (torch.argmax(logits, dim=-1) == reference_tokens).to(torch.float32)
        difference = torch.abs(torch.softmax(logits, dim=-1) - reference_probs)
        report[label] = {"token_agreement": float(same.mean()), "max_softmax_diff": float(difference.max())}
    return report


def absmax_quantize(x):
    largest = torch.max(torch.abs(x))
    if largest == 0:
        scale = torch.tensor(1.0, dtype=x.dtype, device=x.device)
    else:
        scale = largest / 127.0
    codes = torch.clamp(torch.round(x / scale), min=-127, max=127).to(torch.int8)
    return codes, scale


def absmax_dequantize(q, scale):
    return q.to(scale.dtype) * scale


def zeropoint_quantize(x):
    low = torch.minimum(torch.min(x), torch.zeros((), dtype=x.dtype, device=x.device))
    high = torch.maximum(torch.max(x), torch.zeros((), dtype=x.dtype, device=x.device))
    span = high - low
    scale = span / 255.0 if span > 0 else torch.ones((), dtype=x.dtype, device=x.device)
    zero_point = torch.round(-low / scale).to(torch.int32)
    codes = torch.clamp(torch.round(x / scale) + zero_point, min=0, max=255).to(torch.uint8)
    return codes, scale, zero_point


def zeropoint_dequantize(q, scale, zero_point):
    shifted = q.to(torch.int32) - zero_point
    return shifted.to(scale.dtype) * scale


def fake_quantize_linear_layers(model, method):
    if method == "absmax":
        round_trip = lambda w: absmax_dequantize(*absmax_quantize(w))
    elif method == "zeropoint":
        round_trip = lambda w: zeropoint_dequantize(*zeropoint_quantize(w))
    else:
        raise ValueError("unknown method: " + str(method))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.data = round_trip(module.weight.data)
    return model
