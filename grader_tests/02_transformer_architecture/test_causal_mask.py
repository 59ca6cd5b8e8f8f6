"""causal_mask: a boolean lower-triangular matrix, True where attention is allowed."""

import pytest

from transformer_references import allowed_positions, assert_close_or_diagnose, causal_mask_mistakes

pytestmark = pytest.mark.question("causal_mask")


@pytest.mark.points(2)
def test_allows_the_past_and_the_token_itself(submission):
    assert_close_or_diagnose(submission.causal_mask(7), allowed_positions(7), what="causal_mask(7)",
                             mistakes=causal_mask_mistakes(7),
                             hint="return a torch.bool [seq_len, seq_len] tensor with True at (i, j) for j <= i.")


@pytest.mark.points(1)
def test_single_token_attends_to_itself(submission):
    assert_close_or_diagnose(submission.causal_mask(1), allowed_positions(1), what="causal_mask(1)",
                             hint="a sequence of one token gives [[True]]: the token sees itself.")


@pytest.mark.gpu
@pytest.mark.points(0)
def test_builds_the_mask_on_the_requested_device(submission):
    assert_close_or_diagnose(submission.causal_mask(5, device="cuda"), allowed_positions(5, device="cuda"),
                             what='causal_mask(5, device="cuda")', hint="create the tensor with device=device.")
