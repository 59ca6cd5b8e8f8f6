"""compare_precisions: fp16 and bf16 copies of a model against the float32 original."""

import pytest
import torch
from int8_references import precision_report

from autograder import zoo
from autograder.testing import assert_close

pytestmark = pytest.mark.question("compare_precisions")

# Both numbers are statistics of the same forward passes, so correct submissions agree up to how
# they order float32 operations (relative 1e-6 for max_softmax_diff). token_agreement may differ by
# one position where two 16-bit logits tie. A softmax taken in 16-bit instead of on float32 logits,
# which the notebook rules out, moves max_softmax_diff by 1% (fp16) to 5% (bf16), measured.
AGREEMENT_POSITIONS = 1
SOFTMAX_RTOL = 1e-3


def assert_report(submission, device: str) -> None:
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    expected = precision_report("qwen2", ids)
    got = submission.compare_precisions(zoo.tiny_model("qwen2", device=device), ids)
    assert isinstance(got, dict) and set(got) == {"fp16", "bf16"}, (
        f'compare_precisions must return a dict with the keys "fp16" and "bf16", got {got!r:.200}')
    for key in expected:
        what = f'compare_precisions(tiny "qwen2" on {device}, input_ids)["{key}"]'
        assert isinstance(got[key], dict) and set(got[key]) == set(expected[key]), (
            f"{what} must be a dict with the keys {sorted(expected[key])}, got {got[key]!r:.200}")
        for stat, value in got[key].items():
            assert type(value) is float, (
                f'{what}["{stat}"]: expected a plain Python float, got {type(value).__name__} (use .item())')
        assert_close(got[key]["token_agreement"], expected[key]["token_agreement"], rtol=0,
                     atol=(AGREEMENT_POSITIONS + 0.5) / ids.numel(),
                     what=f'{what}["token_agreement"] (share of the {ids.numel()} positions whose argmax token agrees with float32)')
        assert_close(got[key]["max_softmax_diff"], expected[key]["max_softmax_diff"], rtol=SOFTMAX_RTOL, atol=0,
                     what=f'{what}["max_softmax_diff"] (largest |softmax difference|, softmax over the logits cast to float32)')


@pytest.mark.points(2)
def test_report_on_cpu(submission):
    assert_report(submission, "cpu")


@pytest.mark.gpu
@pytest.mark.points(1)
def test_report_on_cuda(submission):
    assert_report(submission, "cuda")
