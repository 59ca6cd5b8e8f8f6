"""top_p_filter against transformers' TopPLogitsWarper.

Inputs are chosen so that no token's cumulative probability lies within 1e-3 (fp32) or 3e-2
(fp16/bf16) of p: a correct filter summing in another order or precision keeps the same tokens. The one
exception is exact: equal logits give probabilities of exactly 1/n, whose sums any order gives exactly.
"""

import pytest
import torch

from intro_references import LOGITS_WARPERS, assert_leaves_its_input_alone, assert_same_filter, random_logits, reference_top_p

pytestmark = [pytest.mark.question("top_p_filter"), pytest.mark.forbidden(*LOGITS_WARPERS)]


def assert_top_p_matches(submission, logits, p, what):
    assert_same_filter(submission.top_p_filter(logits, p), logits, reference_top_p(logits, p),
                       what=f"top_p_filter({what}, p={p})")


@pytest.mark.points(1)
def test_matches_transformers(submission):
    logits = random_logits(6, 64, seed=30)
    for p in (0.3, 0.75, 0.95):
        assert_top_p_matches(submission, logits, p, "random logits [6, 64]")
    tied = torch.tensor([[0.2, 0.3, 0.2, 0.3]]).log()
    assert_top_p_matches(submission, tied, 0.5, "log([[0.2, 0.3, 0.2, 0.3]])")
    # A token whose cumulative probability (from the least likely) is exactly 1 - p goes, as in
    # TopPLogitsWarper (`<= 1 - p`). Which of the equal tokens stay is not graded, only how many.
    for n, p in ((4, 0.5), (8, 0.25)):
        flat = torch.zeros(2, n)
        kept, expected = submission.top_p_filter(flat, p), int(reference_top_p(flat, p)[0].isfinite().sum())
        what = f"top_p_filter(zeros [2, {n}], p={p})"
        assert isinstance(kept, torch.Tensor) and kept.shape == flat.shape, (
            f"{what}: expected a tensor of shape {tuple(flat.shape)}")
        assert kept.isfinite().sum(-1).tolist() == [expected] * 2, (
            f"{what}: your filter kept {kept.isfinite().sum(-1).tolist()} tokens per row, the nucleus has {expected}: "
            f"probabilities are exactly 1/{n}, and a token whose cumulative probability is exactly 1 - p = {1 - p:g} "
            "is removed (`<= 1 - p`, not `< 1 - p`)")


@pytest.mark.points(1)
def test_tiny_p_keeps_only_the_most_likely_token_and_p_one_keeps_everything(submission):
    """With p = 1e-4 only the most likely token stays; with p = 1 (a batch of one row) every token is part
    of the nucleus."""
    assert_top_p_matches(submission, random_logits(5, 40, seed=31), 1e-4, "random logits [5, 40]")
    assert_top_p_matches(submission, random_logits(1, 48, seed=32), 1.0, "random logits [1, 48]")


@pytest.mark.points(1)
def test_large_logits_do_not_overflow(submission):
    """The softmax is shift-invariant, so logits near 100 to 1000 give the same nucleus; exp() of them
    overflows unless the maximum is subtracted first (torch.softmax does that)."""
    logits = random_logits(4, 64, seed=34)
    for offset, p in ((100.0, 0.75), (1000.0, 0.3)):
        assert_top_p_matches(submission, logits + offset, p, f"random logits [4, 64] + {offset:g}")


@pytest.mark.points(1)
def test_keeps_the_dtype_and_leaves_the_input_alone(submission):
    for dtype in (torch.float16, torch.bfloat16):
        for p in (0.3, 0.5):
            assert_top_p_matches(submission, random_logits(3, 50, seed=33).to(dtype), p,
                                 f"{str(dtype).removeprefix('torch.')} logits [3, 50]")
    assert_leaves_its_input_alone(submission, "top_p_filter", random_logits(3, 50, seed=34), 0.3)


@pytest.mark.gpu
@pytest.mark.points(0)
def test_half_precision_on_cuda(submission):
    for dtype in (torch.float16, torch.bfloat16):
        assert_top_p_matches(submission, random_logits(3, 50, seed=33).to("cuda", dtype), 0.3,
                             f"cuda {str(dtype).removeprefix('torch.')} logits [3, 50]")
