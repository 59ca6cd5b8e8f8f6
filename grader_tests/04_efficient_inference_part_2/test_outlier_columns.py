"""outlier_columns(x, threshold=6.0) -> LongTensor: the feature columns LLM.int8() keeps in 16/32 bit."""

import pytest
import torch

from autograder.testing import assert_close
from quant_references import FORBIDDEN_BNB, activations_with_outliers, bnb_int8

pytestmark = [pytest.mark.question("outlier_columns"), pytest.mark.forbidden(*FORBIDDEN_BNB)]


@pytest.mark.points(2)
def test_finds_feature_columns_not_rows(submission):
    # 12 tokens x 40 features; outliers live in feature columns 3, 17 and 38 of every token.
    x = activations_with_outliers(12, 40, [3, 17, 38], seed=4)
    _, _, expected = bnb_int8(x, threshold=6.0)
    assert_close(submission.outlier_columns(x), expected.long(),
                 what="outlier_columns(x) (sorted indices of the COLUMNS holding any |value| >= 6)")


@pytest.mark.points(1)
def test_threshold_is_inclusive_and_on_magnitude(submission):
    x = torch.zeros(5, 8)
    x[1, 6] = 2.0   # exactly at the threshold: an outlier (|x| >= threshold)
    x[3, 2] = -2.5  # negative: judged by its magnitude
    x[0, 4] = 1.99  # below the threshold
    assert_close(submission.outlier_columns(x, threshold=2.0), torch.tensor([2, 6]),
                 what="outlier_columns(x, threshold=2.0) with x[1, 6] = 2.0, x[3, 2] = -2.5, x[0, 4] = 1.99")


@pytest.mark.points(1)
def test_no_outliers_gives_empty_long_tensor(submission):
    x = torch.randn(6, 10, generator=torch.Generator().manual_seed(5)).clamp(-3, 3)
    assert_close(submission.outlier_columns(x), torch.zeros(0, dtype=torch.long),
                 what="outlier_columns(x) when no |value| reaches 6 (an empty LongTensor)")
