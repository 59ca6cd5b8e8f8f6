"""param_bytes_by_dtype and model_size_mb against the model's own parameters and memory footprint."""

import pytest
import torch

from autograder import zoo
from autograder.testing import assert_close

pytestmark = pytest.mark.question("model_size")

# get_memory_footprint() is a whole number of bytes; a correct size divides it by 2**20, exactly in
# floating point. The zoo models' buffers (rotary frequencies, 64 bytes) are 1.5e-4 of their size, so
# the tolerance must stay far below that for "parameters **and buffers**" to be graded; 1e-9 only
# absorbs summing in another order. Dividing by 1e6 instead of 2**20 is 5% off.
SIZE_RTOL = 1e-9


def expected_param_bytes(model) -> dict:
    sizes: dict = {}
    for p in model.parameters():  # each tensor once, so tied weights count once
        sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel() * p.element_size()
    return sizes


def assert_size_mb(submission, model, what: str) -> None:
    got = submission.model_size_mb(model)
    assert type(got) is float, f"{what}: expected a plain Python float, got {type(got).__name__} (use .item() or float())"
    assert_close(got, model.get_memory_footprint() / 2**20, rtol=SIZE_RTOL, atol=0,
                 what=f"{what} (parameters and buffers, each tensor once; 1 MB = 2**20 bytes: "
                      "get_memory_footprint() / 2**20)")


@pytest.mark.points(1)
def test_param_bytes_of_fp32_and_half_precision_models(submission):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        model = zoo.tiny_model("llama", dtype=dtype)
        got = submission.param_bytes_by_dtype(model)
        what = f'param_bytes_by_dtype(tiny "llama", {dtype}) ({torch.empty(0, dtype=dtype).element_size()} bytes per parameter)'
        assert isinstance(got, dict) and all(type(v) is int for v in got.values()), (
            f"{what}: expected a dict {{dtype: bytes}} with plain int values, got {got!r:.200}")
        assert_close(got, expected_param_bytes(model), rtol=0, atol=0, what=what)


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
