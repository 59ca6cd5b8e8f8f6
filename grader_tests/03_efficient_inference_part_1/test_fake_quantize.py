"""fake_quantize_linear_layers: every nn.Linear weight on its tensor's int8 grid, nothing else changed.

The returned model stays in the sandbox (a handle). It is judged by what it computes (its forward)
and by the tensors its modules really hold (`_parameters`, `_buffers`), never by its `state_dict()`
or `named_parameters()`, which a model can override to show quantized copies it does not use.
"""

import pytest
import torch
from int8_references import FORBIDDEN, GRIDS, assert_codes, fake_quantized_model, linear_weight_names, real_tensors

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


def quantized(submission, model, method: str):
    """The model the submission returns (it stays in the sandbox: a handle)."""
    result = submission.fake_quantize_linear_layers(model, method)
    assert result is not None, "fake_quantize_linear_layers returned None: return the (modified) model"
    return result


def with_nonzero_biases(name: str) -> dict:
    """A zoo model's state with deterministic non-zero biases (the zoo's biases are all zero, so a
    function that also quantizes biases would go unnoticed on it)."""
    state = zoo.tiny_model(name).state_dict()
    g = torch.Generator().manual_seed(7)
    for key, value in state.items():
        if key.endswith(".bias"):
            state[key] = torch.randn(value.shape, generator=g) * 0.5
    return state


def biased_quantized(submission, name: str, method: str):
    """The submission's result on a zoo model with non-zero biases. A modified zoo model cannot be sent
    to the sandbox, so the model returned by a first call is reset there (load_state_dict: original
    weights, non-zero biases) and quantized a second time."""
    state = with_nonzero_biases(name)
    model = quantized(submission, zoo.tiny_model(name), method)
    model.load_state_dict(state)
    return quantized(submission, model, method), state


def assert_weights_on_the_grid(submission, name: str, method: str) -> None:
    original = zoo.tiny_model(name)
    weights = real_tensors(quantized(submission, zoo.tiny_model(name), method), original)
    for key in linear_weight_names(original):
        what = f'fake_quantize_linear_layers(tiny "{name}", "{method}"): {key}'
        got = weights.get(key)
        assert got is not None, (
            f"{what} is missing: keep every nn.Linear with its weight Parameter (write the result back with weight.copy_)")
        assert got.dtype == torch.float32, f"{what} has dtype {got.dtype}: fake quantization keeps float32 weights"
        grid = GRIDS[method](original.get_parameter(key))
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
            model = quantized(submission, zoo.tiny_model("llama"), method)
            drift = (expected - fp32_logits).abs().max().item()
            assert_close(model(ids).logits, expected, rtol=0, atol=DRIFT_RTOL * drift,
                         what=f'logits computed by the "{method}" fake-quantized tiny "llama" (its forward) against '
                              f"the reference fake-quantized model (quantization moves them by up to {drift:.2f})")


@pytest.mark.points(1)
def test_everything_but_linear_weights_is_unchanged(submission):
    reference = zoo.tiny_model("qwen2")
    model, state = biased_quantized(submission, "qwen2", "absmax")
    linear_weights = set(linear_weight_names(reference)) | {"model.embed_tokens.weight"}  # tied to lm_head
    got = real_tensors(model, reference)
    buffers = dict(reference.named_buffers())
    for key, value in {**state, **buffers}.items():
        if key in linear_weights:
            continue
        assert key in got, f'fake_quantize_linear_layers(tiny "qwen2", "absmax"): the returned model no longer holds {key}'
        assert_close(got[key], value, rtol=0, atol=0,
                     what=f'fake_quantize_linear_layers(tiny "qwen2" with non-zero biases, "absmax"): {key} must stay '
                          "unchanged (only nn.Linear weights are quantized; biases, norms, embeddings and buffers are not)")


@pytest.mark.points(1)
def test_unknown_method_raises_value_error(submission):
    with submission.raises(ValueError):
        submission.fake_quantize_linear_layers(zoo.tiny_model("llama"), "minmax")
