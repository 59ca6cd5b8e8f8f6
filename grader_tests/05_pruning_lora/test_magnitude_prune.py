"""magnitude_prune(weight, sparsity) -> (pruned, mask): exact, against a reference written from the notebook's
rules (k = round(sparsity * numel), one threshold per tensor, ties pruned in flat index order)."""

import pytest
import torch

from autograder.testing import assert_close

pytestmark = pytest.mark.question("magnitude_prune")


def reference(weight: torch.Tensor, sparsity: float):
    k = round(sparsity * weight.numel())
    keep = torch.ones(weight.numel(), dtype=torch.bool)
    keep[torch.argsort(weight.abs().flatten().cpu(), stable=True)[:k]] = False
    mask = keep.reshape(weight.shape).to(weight.device)
    return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)), mask


def weights(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def assert_pruned(submission, weight, sparsity, what):
    pruned, mask = submission.magnitude_prune(weight, sparsity)
    want_pruned, want_mask = reference(weight, sparsity)
    assert_close(mask, want_mask, what=f"mask of {what} (True where the weight is kept)")
    assert_close(pruned, want_pruned, what=f"pruned weight of {what}")


@pytest.mark.points(2)
def test_prunes_the_smallest_magnitudes_of_the_whole_tensor(submission):
    assert_pruned(submission, weights(16, 12, seed=0), 0.5, "magnitude_prune(w of shape [16, 12], 0.5)")
    assert_pruned(submission, weights(5, 40, seed=1) * torch.linspace(0.1, 10, 5)[:, None], 0.3,
                  "magnitude_prune(w whose rows differ in scale, 0.3) (one threshold for the whole tensor)")


@pytest.mark.points(1)
def test_rounds_the_number_of_pruned_entries(submission):
    # 0.7 * 64 = 44.8: round gives 45 (int() would give 44); 0.3 * 64 = 19.2 gives 19 (ceil would give 20).
    for sparsity in (0.7, 0.3):
        assert_pruned(submission, weights(8, 8, seed=2), sparsity,
                      f"magnitude_prune(w of 64 entries, {sparsity}) (k = round({sparsity} * 64))")
    # 0.25 * 10 = 2.5 exactly: Python's round gives 2, the even number (rounding a half up gives 3).
    assert_pruned(submission, weights(2, 5, seed=7), 0.25,
                  "magnitude_prune(w of 10 entries, 0.25) (k = round(2.5) = 2: a half rounds to the even number)")


@pytest.mark.points(1)
def test_ties_are_pruned_in_flat_index_order(submission):
    w = torch.tensor([[0.5, -0.5, 2.0], [0.5, 1.0, -0.5]])
    assert_pruned(submission, w, 0.5, "magnitude_prune of [[0.5, -0.5, 2], [0.5, 1, -0.5]] at 0.5 "
                                      "(three of the four |w| = 0.5 go: the first three in row-major order)")


@pytest.mark.points(1)
def test_sparsity_zero_keeps_all_and_one_prunes_all(submission):
    w = weights(3, 4, seed=3)
    assert_pruned(submission, w, 0.0, "magnitude_prune(w, 0.0)")
    assert_pruned(submission, w, 1.0, "magnitude_prune(w, 1.0)")


@pytest.mark.points(1)
def test_rejects_a_sparsity_outside_0_and_1(submission):
    for sparsity in (-0.1, 1.5):
        with submission.raises(ValueError):
            submission.magnitude_prune(weights(2, 2, seed=4), sparsity)


@pytest.mark.points(1)
def test_leaves_its_input_unchanged_and_keeps_its_dtype(submission):
    w = weights(6, 6, seed=5, dtype=torch.float16)
    with submission.changed_inputs() as changed:
        pruned, mask = submission.magnitude_prune(w, 0.5)
    assert changed.per_call[0][1] == [], "magnitude_prune changed its input in place: return new tensors"
    want_pruned, want_mask = reference(w, 0.5)
    assert_close(mask, want_mask, what="mask of magnitude_prune(float16 w, 0.5)")
    assert_close(pruned, want_pruned, what="pruned weight of magnitude_prune(float16 w, 0.5) (stays float16)")


@pytest.mark.gpu
@pytest.mark.points(0)
def test_on_cuda(submission):
    w = weights(16, 12, seed=6).cuda()
    pruned, mask = submission.magnitude_prune(w, 0.5)
    want_pruned, want_mask = reference(w, 0.5)
    assert_close(mask, want_mask, what="mask of magnitude_prune(CUDA w, 0.5) (on the input's device)")
    assert_close(pruned, want_pruned, what="pruned weight of magnitude_prune(CUDA w, 0.5)")
