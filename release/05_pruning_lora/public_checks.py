"""Public checks for 05_pruning_lora: small, hand-checkable cases for quick feedback; the hidden suite grades.

They catch the common slips early (per-row instead of per-tensor pruning, an inverted mask, a base layer
left trainable, B not starting at zero, alpha without the 1/r); the hidden suite grades the full contract.
"""

import torch
import torch.nn as nn

from autograder.checks import check, public_check, same_on_gpu  # noqa: F401  (the notebook imports `check`)
from autograder.testing import assert_close


@public_check("magnitude_prune")
def prunes_the_smallest_magnitudes_of_the_whole_tensor(magnitude_prune):
    w = torch.tensor([[0.5, -3.0], [0.1, 2.0]])
    pruned, mask = magnitude_prune(w, 0.5)
    assert_close(mask, torch.tensor([[False, True], [False, True]]), what="mask of magnitude_prune(w, 0.5)")
    assert_close(pruned, torch.tensor([[0.0, -3.0], [0.0, 2.0]]), what="pruned of magnitude_prune(w, 0.5)")


@public_check("magnitude_prune")
def rejects_a_sparsity_outside_0_and_1(magnitude_prune):
    try:
        magnitude_prune(torch.ones(2, 2), 1.5)
    except ValueError:
        return
    raise AssertionError("magnitude_prune(w, 1.5) should raise ValueError: sparsity must be in [0, 1]")


@public_check("magnitude_prune", cuda=True)
def prunes_on_the_inputs_device(magnitude_prune):
    same_on_gpu(magnitude_prune, torch.tensor([[0.5, -3.0, 0.2], [0.1, 2.0, -0.7]]), 0.5,
                what="magnitude_prune(2x3 weight, 0.5)")


def _base():
    torch.manual_seed(0)
    return nn.Linear(6, 4)


@public_check("LoRALinear")
def starts_as_the_frozen_base_layer(LoRALinear):
    base = _base()
    lora = LoRALinear(base, 2, 4.0)
    assert tuple(lora.A.shape) == (2, 6) and tuple(lora.B.shape) == (4, 2), (
        f"A must be [r, in] = [2, 6] and B [out, r] = [4, 2], got {list(lora.A.shape)} and {list(lora.B.shape)}")
    assert not lora.base.weight.requires_grad, "the base layer must be frozen (requires_grad False)"
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert_close(lora(x), base(x), what="LoRALinear(base, 2, 4.0)(x) at initialisation (B is zero)")


@public_check("LoRALinear")
def adds_the_scaled_low_rank_update(LoRALinear):
    base = _base()
    lora = LoRALinear(base, 2, 4.0)
    with torch.no_grad():
        lora.A.copy_(torch.ones(2, 6))
        lora.B.copy_(torch.ones(4, 2))
        x = torch.ones(1, 6)
        # x A^T = [6, 6], then B^T: every output gains 12, scaled by alpha / r = 2.
        assert_close(lora(x), base(x) + 24.0, what="LoRALinear with A, B all ones on x all ones")


@public_check("LoRALinear", cuda=True)
def runs_as_a_module_moved_to_the_gpu(LoRALinear):
    lora = LoRALinear(_base(), 2, 4.0)
    with torch.no_grad():
        lora.B.copy_(torch.randn(4, 2))
    same_on_gpu(lambda layer, x: layer(x).detach(), lora, torch.randn(3, 6), what="LoRALinear moved with .to(device)")


def _trained_lora(LoRALinear):
    lora = LoRALinear(_base(), 2, 4.0)
    with torch.no_grad():
        lora.B.copy_(torch.randn(4, 2, generator=torch.Generator().manual_seed(1)))
    return lora


@public_check("merge_lora")
def gives_one_layer_with_the_same_output(LoRALinear, merge_lora):
    lora = _trained_lora(LoRALinear)
    merged = merge_lora(lora)
    assert isinstance(merged, nn.Linear), f"merge_lora must return an nn.Linear, got {type(merged).__name__}"
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert_close(merged(x), lora(x), what="merge_lora(layer)(x) against layer(x)")


@public_check("merge_lora", cuda=True)
def merges_on_the_gpu(LoRALinear, merge_lora):
    same_on_gpu(lambda layer: merge_lora(layer).weight.detach(), _trained_lora(LoRALinear),
                what="merge_lora(layer).weight")
