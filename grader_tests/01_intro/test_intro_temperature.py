"""apply_temperature: logits / T in the input's dtype, and a clear error for T <= 0."""

import pytest
import torch

from autograder.testing import assert_close
from intro_references import LOGITS_WARPERS, random_logits
from transformers.generation.logits_process import TemperatureLogitsWarper

pytestmark = [pytest.mark.question("apply_temperature"), pytest.mark.forbidden(*LOGITS_WARPERS)]


@pytest.mark.points(1)
def test_divides_logits_and_keeps_dtype(submission):
    logits = random_logits(3, 20, seed=10)
    for temperature, dtype in [(0.7, torch.float32), (2.5, torch.float32), (0.5, torch.float16), (1.7, torch.bfloat16)]:
        x = logits.to(dtype)
        assert_close(submission.apply_temperature(x, temperature), TemperatureLogitsWarper(temperature)(None, x),
                     what=f"apply_temperature({str(dtype).removeprefix('torch.')} logits, {temperature})")


@pytest.mark.points(1)
def test_rejects_non_positive_temperature(submission):
    logits = random_logits(2, 5, seed=11)
    for temperature in (0.0, -1.0):
        with submission.raises(ValueError):
            submission.apply_temperature(logits, temperature)
