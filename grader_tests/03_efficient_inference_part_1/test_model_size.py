"""param_bytes_by_dtype and model_size_mb against the model's own parameters and memory footprint."""

import pytest
import torch

from autograder import zoo
from autograder.testing import assert_close

pytestmark = pytest.mark.question("model_size")

# get_memory_footprint() includes the buffers (rotary frequencies, 64 bytes); a size that leaves them
# out is within 0.02% and correct in substance. Dividing by 1e6 instead of 2**20 is 5% off.
SIZE_RTOL = 1e-3


def expected_param_bytes(model) -> dict:
    sizes: dict = {}
    for p in model.parameters():  # each tensor once, so tied weights count once
        sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel() * p.element_size()
    return sizes


def assert_size_mb(submission, model, what: str) -> None:
    assert_close(submission.model_size_mb(model), model.get_memory_footprint() / 2**20, rtol=SIZE_RTOL, atol=0,
                 what=f"{what} (1 MB = 2**20 bytes: get_memory_footprint() / 2**20)")


@pytest.mark.points(1)
def test_param_bytes_of_an_fp32_model(submission):
    model = zoo.tiny_model("llama")
    assert_close(submission.param_bytes_by_dtype(model), expected_param_bytes(model), rtol=0, atol=0,
                 what='param_bytes_by_dtype(tiny "llama", float32)')


@pytest.mark.points(1)
def test_param_bytes_of_half_precision_models(submission):
    for dtype in (torch.float16, torch.bfloat16):
        model = zoo.tiny_model("llama", dtype=dtype)
        assert_close(submission.param_bytes_by_dtype(model), expected_param_bytes(model), rtol=0, atol=0,
                     what=f'param_bytes_by_dtype(tiny "llama", {dtype}) (2 bytes per parameter)')


@pytest.mark.points(1)
def test_tied_embeddings_count_once(submission):
    model = zoo.tiny_model("qwen2")
    expected = expected_param_bytes(model)
    tied = model.lm_head.weight
    counted_twice = {torch.float32: expected[torch.float32] + tied.numel() * tied.element_size()}
    got = submission.param_bytes_by_dtype(model)
    assert got != counted_twice, (
        'param_bytes_by_dtype(tiny "qwen2") counts the tied embedding twice: lm_head.weight is '
        "model.embed_tokens.weight, so count each parameter tensor once (model.parameters() does)")
    assert_close(got, expected, rtol=0, atol=0, what='param_bytes_by_dtype(tiny "qwen2")')
    assert_size_mb(submission, model, 'model_size_mb(tiny "qwen2", tied embeddings counted once)')


@pytest.mark.points(1)
def test_model_size_mb_matches_the_memory_footprint(submission):
    for dtype in (torch.float32, torch.bfloat16):
        assert_size_mb(submission, zoo.tiny_model("llama", dtype=dtype), f'model_size_mb(tiny "llama", {dtype})')
