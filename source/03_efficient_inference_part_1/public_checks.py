"""Public checks for 03_efficient_inference_part_1: small, hand-checkable cases for quick feedback.

They catch the common slips early (wrong dtype of the codes, a scale that is not max|x| / 127, a
zero point that is not a whole number); the hidden suite grades the full contract.
"""

import torch

from autograder import zoo
from autograder.checks import check, public_check, same_on_gpu, to_gpu  # noqa: F401  (the notebook imports `check`)
from autograder.testing import assert_close


@public_check("model_size")
def counts_two_bytes_per_bf16_parameter(param_bytes_by_dtype):
    llama = zoo.tiny_model("llama", dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in llama.parameters())
    assert_close(param_bytes_by_dtype(llama), {torch.bfloat16: 2 * n_params}, rtol=0, atol=0,
                 what="param_bytes_by_dtype(tiny llama in bfloat16)")


@public_check("model_size")
def agrees_with_get_memory_footprint(model_size_mb):
    qwen = zoo.tiny_model("qwen2")  # its lm_head shares the embedding matrix
    mib = qwen.get_memory_footprint() / 2**20
    assert_close(model_size_mb(qwen), mib, rtol=1e-9, atol=0,
                 what="model_size_mb(tiny qwen2) in MiB (parameters and buffers, each tensor once)")


@public_check("absmax")
def quantizes_a_small_vector_symmetrically(absmax_quantize):
    codes, scale = absmax_quantize(torch.tensor([-2.54, 0.0, 1.0]))
    assert_close(scale, torch.tensor(0.02), what="scale of [-2.54, 0, 1] (max|x| / 127)")
    assert_close(codes, torch.tensor([-127, 0, 50], dtype=torch.int8), what="codes of [-2.54, 0, 1]")


@public_check("absmax")
def absmax_round_trip_stays_within_half_a_step(absmax_quantize, absmax_dequantize):
    values = torch.linspace(-1.0, 3.0, 50)
    codes, scale = absmax_quantize(values)
    assert_close(absmax_dequantize(codes, scale), values, rtol=0, atol=float(scale) / 2 + 1e-6,
                 what="absmax round trip of linspace(-1, 3, 50)")


@public_check("zeropoint")
def quantizes_a_small_vector_with_a_zero_point(zeropoint_quantize):
    codes, scale, zero_point = zeropoint_quantize(torch.tensor([-1.0, 0.0, 3.0]))
    assert_close(scale, torch.tensor(4 / 255), what="scale of [-1, 0, 3] ((3 - (-1)) / 255)")
    assert float(zero_point) == 64, f"zero point of [-1, 0, 3] should be round(63.75) = 64, got {float(zero_point)}"
    assert_close(codes, torch.tensor([0, 64, 255], dtype=torch.uint8), what="codes of [-1, 0, 3]")


@public_check("zeropoint")
def zero_point_round_trip_stays_within_half_a_step(zeropoint_quantize, zeropoint_dequantize):
    values = torch.linspace(-0.5, 2.0, 50)
    codes, scale, zero_point = zeropoint_quantize(values)
    assert_close(zeropoint_dequantize(codes, scale, zero_point), values, rtol=0, atol=float(scale) / 2 + 1e-6,
                 what="zero-point round trip of linspace(-0.5, 2, 50)")


@public_check("fake_quantize_linear_layers")
def linear_weights_take_at_most_255_values(fake_quantize_linear_layers):
    llama = fake_quantize_linear_layers(zoo.tiny_model("llama"), "absmax")
    linear_layers = [(name, m) for name, m in llama.named_modules() if type(m) is torch.nn.Linear]
    for name, layer in linear_layers:
        distinct = layer.weight.unique().numel()
        assert distinct <= 255, f"{name}.weight holds {distinct} distinct values; int8 codes allow at most 255"
    assert_close(llama.model.embed_tokens.weight, zoo.tiny_model("llama").model.embed_tokens.weight,
                 what="the embedding (not an nn.Linear: it must stay unchanged)")


@public_check("compare_precisions")
def reports_both_half_precisions(compare_precisions):
    ids = torch.arange(1, 33).reshape(2, 16)
    report = compare_precisions(zoo.tiny_model("llama"), ids)
    assert set(report) == {"fp16", "bf16"}, f'keys should be "fp16" and "bf16", got {sorted(report)}'
    for key, numbers in report.items():
        assert set(numbers) == {"token_agreement", "max_softmax_diff"}, f"report[{key!r}] has keys {sorted(numbers)}"
        assert 0 <= numbers["token_agreement"] <= 1, f"report[{key!r}]['token_agreement'] is not a share"
    assert report["fp16"]["max_softmax_diff"] < report["bf16"]["max_softmax_diff"], (
        "bf16 keeps 8 significant bits, fp16 11: its softmax should drift further from float32")


# --- on the GPU (where one is present): the same answers, on the input's device ------------------


@public_check("model_size", cuda=True)
def counts_a_model_on_the_gpu(param_bytes_by_dtype, model_size_mb):
    llama = zoo.tiny_model("llama", dtype=torch.bfloat16)
    same_on_gpu(param_bytes_by_dtype, llama, what="param_bytes_by_dtype(tiny llama in bf16)")
    same_on_gpu(model_size_mb, llama, what="model_size_mb(tiny llama in bf16)")


@public_check("absmax", cuda=True)
def quantizes_on_the_inputs_device(absmax_quantize, absmax_dequantize):
    x = torch.tensor([0.5, -2.0, 1.0, 0.0])
    same_on_gpu(absmax_quantize, x, what="absmax_quantize([0.5, -2, 1, 0])")
    same_on_gpu(absmax_dequantize, *absmax_quantize(x), what="absmax_dequantize(absmax_quantize([0.5, -2, 1, 0]))")


@public_check("zeropoint", cuda=True)
def quantizes_with_a_zero_point_on_the_inputs_device(zeropoint_quantize, zeropoint_dequantize):
    x = torch.tensor([0.5, -2.0, 1.0, 3.0])
    same_on_gpu(zeropoint_quantize, x, what="zeropoint_quantize([0.5, -2, 1, 3])")
    same_on_gpu(zeropoint_dequantize, *zeropoint_quantize(x), what="zeropoint_dequantize(zeropoint_quantize(...))")


def _linear_weights(model):
    return {name: m.weight.detach() for name, m in model.named_modules() if type(m) is torch.nn.Linear}


@public_check("fake_quantize_linear_layers", cuda=True)
def quantizes_a_model_on_the_gpu(fake_quantize_linear_layers):
    same_on_gpu(lambda model: _linear_weights(fake_quantize_linear_layers(model, "absmax")), zoo.tiny_model("llama"),
                what="the nn.Linear weights after fake_quantize_linear_layers(tiny llama, 'absmax')")


@public_check("compare_precisions", cuda=True)
def compares_a_model_on_the_gpu(compare_precisions):
    report = compare_precisions(to_gpu(zoo.tiny_model("llama")), to_gpu(torch.arange(1, 33).reshape(2, 16)))
    assert set(report) == {"fp16", "bf16"}, f'keys should be "fp16" and "bf16", got {sorted(report)}'
    for key, numbers in report.items():
        assert 0 <= float(numbers["token_agreement"]) <= 1, f"report[{key!r}]['token_agreement'] is not a share"
