"""top_k_filter against transformers' TopKLogitsWarper: ties with the k-th logit stay, dtype is kept."""

import pytest
import torch

from intro_references import LOGITS_WARPERS, assert_leaves_its_input_alone, assert_same_filter, random_logits, reference_top_k

pytestmark = [pytest.mark.question("top_k_filter"), pytest.mark.forbidden(*LOGITS_WARPERS)]


def assert_top_k_matches(submission, logits, k, what):
    assert_same_filter(submission.top_k_filter(logits, k), logits, reference_top_k(logits, k),
                       what=f"top_k_filter({what}, k={k})")


@pytest.mark.points(1)
def test_matches_transformers(submission):
    logits = random_logits(4, 64, seed=20)
    for k in (1, 5, 20):
        assert_top_k_matches(submission, logits, k, "random logits [4, 64]")


@pytest.mark.points(1)
def test_k_at_least_vocab_size_keeps_everything(submission):
    """A batch of one row, and k >= vocab: nothing may be removed (torch.topk alone would fail)."""
    logits = random_logits(1, 32, seed=21)
    for k in (32, 100):
        assert_top_k_matches(submission, logits, k, "random logits [1, 32]")


@pytest.mark.points(1)
def test_keeps_ties_with_the_kth_largest(submission):
    logits = torch.tensor([[3.0, 2.0, 0.5, 2.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    assert_top_k_matches(submission, logits, 2, "[[3, 2, 0.5, 2, 1, 2], [1, 1, 1, 1, 1, 1]]")


@pytest.mark.points(1)
def test_keeps_the_dtype_and_leaves_the_input_alone(submission):
    for dtype in (torch.float16, torch.bfloat16):
        assert_top_k_matches(submission, random_logits(3, 50, seed=22).to(dtype), 7,
                             f"{str(dtype).removeprefix('torch.')} logits [3, 50]")
    assert_leaves_its_input_alone(submission, "top_k_filter", random_logits(3, 50, seed=24), 7)


@pytest.mark.gpu
@pytest.mark.points(0)
def test_half_precision_on_cuda(submission):
    for dtype in (torch.float16, torch.bfloat16):
        assert_top_k_matches(submission, random_logits(3, 50, seed=23).to("cuda", dtype), 4,
                             f"cuda {str(dtype).removeprefix('torch.')} logits [3, 50]")
