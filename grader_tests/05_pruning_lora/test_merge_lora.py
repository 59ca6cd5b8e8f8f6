"""merge_lora(layer) -> nn.Linear: W + alpha / r * B A, the base bias, the same output, and the LoRA layer
left as it was."""

import pytest
import torch
from lora_references import IN, OUT, base_layer, expected_output, inputs, loaded, merged_weight

from autograder.testing import assert_close

pytestmark = pytest.mark.question("merge_lora")


@pytest.mark.points(2)
def test_merged_weight_is_w_plus_the_scaled_update(submission):
    base = base_layer(20)
    lora, a, b = loaded(submission, base, 4, 8.0, seed=21)
    merged = submission.merge_lora(lora)
    assert_close(merged.weight, merged_weight(base, a, b, 4, 8.0), rtol=1e-5, atol=1e-6,
                 what="merge_lora(layer).weight (W + alpha / r * B @ A)")


@pytest.mark.points(1)
def test_merged_layer_gives_the_lora_layers_output(submission):
    """Compared with what a correct LoRA layer gives, so a mistake in LoRALinear costs no merge_lora points."""
    base = base_layer(22)
    lora, a, b = loaded(submission, base, 2, 16.0, seed=23)
    merged = submission.merge_lora(lora)
    x = inputs(2, 3, IN, seed=24)
    assert_close(merged(x), expected_output(base, a, b, 2, 16.0, x), rtol=1e-4, atol=1e-5,
                 what="merge_lora(layer)(x) against base(x) + alpha / r * x A^T B^T")


@pytest.mark.points(1)
def test_keeps_the_base_bias_or_its_absence(submission):
    base = base_layer(25)
    lora, _, _ = loaded(submission, base, 4, 8.0, seed=26)
    assert_close(submission.merge_lora(lora).bias, base.bias.detach(), what="merge_lora(layer).bias (the base's)")
    lora, _, _ = loaded(submission, base_layer(27, bias=False), 4, 8.0, seed=28)
    assert submission.merge_lora(lora).bias is None, "a base layer without bias gives a merged layer without bias"


@pytest.mark.points(1)
def test_returns_a_new_linear_and_leaves_the_lora_layer_unchanged(submission):
    base = base_layer(29)
    lora, a, b = loaded(submission, base, 4, 8.0, seed=30)
    x = inputs(3, IN, seed=31)
    before = lora(x)
    merged = submission.merge_lora(lora)
    assert (merged.in_features, merged.out_features) == (IN, OUT), "the merged layer is a Linear(12, 8)"
    assert_close(lora.base.weight, base.weight.detach(), what="the LoRA layer's base weight after merge_lora")
    assert_close(lora.A, a, what="A after merge_lora")
    assert_close(lora.B, b, what="B after merge_lora")
    assert_close(lora(x), before, what="the LoRA layer's output after merge_lora (it must not change)")


@pytest.mark.points(1)
def test_keeps_the_base_layers_dtype(submission):
    for dtype in (torch.float64, torch.bfloat16):
        base = base_layer(32).to(dtype)
        lora, a, b = loaded(submission, base, 4, 8.0, seed=33)
        merged = submission.merge_lora(lora)
        assert (merged.weight.dtype, merged.bias.dtype) == (dtype, dtype), (
            f"merge_lora of a {dtype} layer gives a {merged.weight.dtype} weight and a {merged.bias.dtype} bias: "
            "the merged layer has the base layer's dtype")
        if dtype == torch.float64:  # bfloat16 leaves the precision of the sum to the student
            assert_close(merged.weight, (base.weight.detach() + 2.0 * b.double() @ a.double()), rtol=1e-5, atol=1e-6,
                         what="merge_lora(layer).weight of a float64 layer")
