"""fake_quantize_linear_layers: every nn.Linear weight on its tensor's int8 grid, nothing else changed."""

import pytest
import torch
from int8_references import FORBIDDEN, GRIDS, assert_codes, fake_quantized_model, linear_weight_names

from autograder import zoo
from autograder.testing import assert_close

pytestmark = [pytest.mark.question("fake_quantize_linear_layers"), pytest.mark.forbidden(*FORBIDDEN)]

# A correct submission differs from the float64 reference only by float32 rounding of the
# dequantized weights (1e-5 on the logits, measured) and, at rare exact rounding ties, by one grid
# step in a single weight out of ~1e5. The quantization error of all the weights together moves the
# logits by 0.5 to 0.8 (measured on both zoo models); to first order the drift is linear in the weight
# error, so a mistake that changes a noticeable share of the weights (another scale, a skipped layer)
# moves it by a comparable fraction, while a handful of tie flips moves it by far less than 2%.
DRIFT_RTOL = 0.02


def prompt_ids() -> torch.Tensor:
    return torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))


def quantized_state(submission, name: str, method: str) -> dict:
    """The state dict of the model the submission returns (it stays in the sandbox as a handle)."""
    model = submission.fake_quantize_linear_layers(zoo.tiny_model(name), method)
    assert model is not None, "fake_quantize_linear_layers returned None: return the (modified) model"
    return model.state_dict()


def assert_weights_on_the_grid(submission, name: str, method: str) -> None:
    original = zoo.tiny_model(name).state_dict()
    weights = quantized_state(submission, name, method)
    for key in linear_weight_names(zoo.tiny_model(name)):
        what = f'fake_quantize_linear_layers(tiny "{name}", "{method}"): {key}'
        got = weights[key]
        assert got.dtype == torch.float32, f"{what} has dtype {got.dtype}: fake quantization keeps float32 weights"
        grid = GRIDS[method](original[key])
        steps = got.double() / grid.scale + grid.zero_point
        off_grid = (steps - steps.round()).abs().max().item()
        assert off_grid < 1e-3, (
            f"{what} is not on the {method} int8 grid of this weight matrix (up to {off_grid:.2f} steps off): "
            f"quantize each weight matrix as a whole with {method}_quantize (its scale and zero point as the "
            f"notebook defines them), then {method}_dequantize it")
        assert_codes(steps.round(), grid, what=what)


@pytest.mark.points(1)
def test_absmax_weights(submission):
    assert_weights_on_the_grid(submission, "llama", "absmax")


@pytest.mark.points(1)
def test_zeropoint_weights(submission):
    assert_weights_on_the_grid(submission, "qwen2", "zeropoint")


@pytest.mark.points(1)
def test_logits_drift_like_the_reference(submission):
    ids = prompt_ids()
    with torch.no_grad():
        fp32_logits = zoo.tiny_model("llama")(ids).logits
        for method in GRIDS:
            expected = fake_quantized_model("llama", method)(ids).logits
            student = zoo.tiny_model("llama")
            student.load_state_dict(quantized_state(submission, "llama", method))
            drift = (expected - fp32_logits).abs().max().item()
            assert_close(student(ids).logits, expected, rtol=0, atol=DRIFT_RTOL * drift,
                         what=f'logits of the "{method}" fake-quantized tiny "llama" against the reference '
                              f"fake-quantized model (quantization moves them by up to {drift:.2f})")


@pytest.mark.points(1)
def test_everything_but_linear_weights_is_unchanged(submission):
    model = zoo.tiny_model("qwen2")
    linear_weights = {id(model.get_parameter(key)) for key in linear_weight_names(model)}
    untouched = {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in linear_weights}
    got = quantized_state(submission, "qwen2", "absmax")
    for key, value in untouched.items():
        assert_close(got[key], value.detach(), rtol=0, atol=0,
                     what=f'fake_quantize_linear_layers(tiny "qwen2", "absmax"): {key} must stay unchanged '
                          "(only nn.Linear weights are quantized; biases, norms and embeddings are not)")
