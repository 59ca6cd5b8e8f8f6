import copy

import torch


def param_bytes_by_dtype(model):
    totals = {}
    seen = set()
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        size = parameter.numel() * parameter.element_size()
        if parameter.dtype in totals:
            totals[parameter.dtype] += size
        else:
            totals[parameter.dtype] = size
    return totals


def model_size_mb(model):
    total_bytes = 0
    for tensor in model.parameters():
        total_bytes += tensor.numel() * tensor.element_size()
    for tensor in model.buffers():
        total_bytes += tensor.numel() * tensor.element_size()
    return float(total_bytes / (1024 * 1024))


def compare_precisions(model, input_ids):
    results = {}
    with torch.no_grad():
        reference_logits = model(input_ids).logits.float()
        reference_tokens = reference_logits.argmax(dim=-1)
        reference_probs = torch.softmax(reference_logits, dim=-1)
        for label, dtype in [("fp16", torch.float16), ("bf16", torch.bfloat16)]:
            half_model = copy.deepcopy(model).to(dtype)
            logits = half_model(input_ids).logits.float()
            agreement = (logits.argmax(dim=-1) == reference_tokens).float().mean().item()
            difference = (torch.softmax(logits, dim=-1) - reference_probs).abs().max().item()
            results[label] = {"token_agreement": agreement, "max_softmax_diff": difference}
    return results


def absmax_quantize(x):
    biggest = x.abs().max()
    if biggest == 0:
        scale = torch.tensor(1.0, dtype=x.dtype)
    else:
        scale = biggest / 127
    codes = torch.clamp(torch.round(x / scale), min=-127, max=127)
    return codes.to(torch.int8), scale


def absmax_dequantize(q, scale):
    return q.to(scale.dtype) * scale


def zeropoint_quantize(x):
    low = torch.minimum(x.min(), torch.zeros((), dtype=x.dtype))
    high = torch.maximum(x.max(), torch.zeros((), dtype=x.dtype))
    if high == low:
        scale = torch.ones((), dtype=x.dtype)
        zero_point = torch.zeros((), dtype=torch.int64)
    else:
        scale = (high - low) / 255
        zero_point = torch.round(-low / scale).to(torch.int64)
    shifted = torch.round(x / scale) + zero_point
    codes = torch.clamp(shifted, 0, 255).to(torch.uint8)
    return codes, scale, zero_point


def zeropoint_dequantize(q, scale, zero_point):
    signed = q.to(torch.int32) - zero_point
    return (signed * scale).to(scale.dtype)


def fake_quantize_linear_layers(model, method):
    if method == "absmax":
        quantize, dequantize = absmax_quantize, absmax_dequantize
    elif method == "zeropoint":
        quantize, dequantize = zeropoint_quantize, zeropoint_dequantize
    else:
        raise ValueError("unknown method: " + repr(method))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            with torch.no_grad():
                restored = dequantize(*quantize(module.weight))
                module.weight.copy_(restored)
    return model
