"""LoRALinear(base, r, alpha): shapes and initialisation, a frozen base, and the forward pass with the test's
own adapter loaded (base(x) + alpha / r * x A^T B^T)."""

import pytest
import torch
from lora_references import IN, OUT, base_layer, expected_output, inputs, loaded

from autograder.testing import assert_close

pytestmark = pytest.mark.question("LoRALinear")


@pytest.mark.points(1)
def test_starts_with_zero_B_and_the_stated_shapes(submission):
    base = base_layer(0)
    lora = submission.LoRALinear(base, 4, 8.0)
    assert_close(lora.B, torch.zeros(OUT, 4), what="B of LoRALinear(Linear(12, 8), r=4) (zeros, shape [out, r])")
    assert tuple(lora.A.shape) == (4, IN), f"A must have shape [r, in] = [4, {IN}], got {list(lora.A.shape)}"
    assert float(lora.A.abs().sum()) > 0, "A must start random (torch.randn(r, in) / r), not at zero"
    wide = submission.LoRALinear(torch.nn.Linear(256, 8), 4, 8.0)  # 1,024 draws: their spread is 1/4 +- 0.01
    spread = float(wide.A.std())
    assert 0.2 < spread < 0.3, f"A must start as torch.randn(r, in) / r: for r = 4 its std is {spread:.3g}, not 0.25"
    x = inputs(3, IN, seed=1)
    assert_close(lora(x), base(x).detach(), what="LoRALinear(base, 4, 8.0)(x) before training (equals base(x))")


@pytest.mark.points(1)
def test_freezes_the_base_layer_and_trains_the_adapter(submission):
    """...and holds nothing else: the notebook asks for no other parameters or buffers."""
    lora = submission.LoRALinear(base_layer(2), 4, 8.0)
    keys = sorted(lora.state_dict())
    assert keys == ["A", "B", "base.bias", "base.weight"], (
        f"the layer's state_dict holds {keys}: it must hold exactly base.weight, base.bias, A and B "
        "(no other parameters or buffers; keep alpha / r as a plain attribute)")
    assert lora.base.weight.requires_grad is False, "base.weight must be frozen (requires_grad False)"
    assert lora.base.bias.requires_grad is False, "base.bias must be frozen (requires_grad False)"
    assert lora.A.requires_grad is True and lora.B.requires_grad is True, "A and B must be trainable parameters"


@pytest.mark.points(2)
def test_adds_the_scaled_low_rank_update(submission):
    base = base_layer(3)
    lora, a, b = loaded(submission, base, 4, 8.0, seed=4)
    x = inputs(2, 5, IN, seed=5)
    assert_close(lora(x), expected_output(base, a, b, 4, 8.0, x), rtol=1e-4, atol=1e-5,
                 what="LoRALinear(base, r=4, alpha=8) with the test's A and B, on x of shape [2, 5, 12]")


@pytest.mark.points(1)
def test_scales_by_alpha_over_r(submission):
    for r, alpha in ((1, 2.0), (8, 4.0)):
        base = base_layer(6)
        lora, a, b = loaded(submission, base, r, alpha, seed=7)
        x = inputs(3, IN, seed=8)
        assert_close(lora(x), expected_output(base, a, b, r, alpha, x), rtol=1e-4, atol=1e-5,
                     what=f"LoRALinear(base, r={r}, alpha={alpha}) (the update is scaled by alpha / r)")


@pytest.mark.points(1)
def test_wraps_a_base_layer_without_bias(submission):
    base = base_layer(9, bias=False)
    lora, a, b = loaded(submission, base, 2, 4.0, seed=10)
    x = inputs(4, IN, seed=11)
    assert_close(lora(x), expected_output(base, a, b, 2, 4.0, x), rtol=1e-4, atol=1e-5,
                 what="LoRALinear around Linear(12, 8, bias=False)")


@pytest.mark.points(1)
def test_rejects_a_rank_that_is_not_positive(submission):
    for r in (0, -2):
        with submission.raises(ValueError):
            submission.LoRALinear(base_layer(12), r, 8.0)
