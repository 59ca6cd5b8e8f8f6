"""greedy_generate: the text must equal `model.generate(do_sample=False)` on two architectures."""

import pytest

from autograder import zoo
from autograder.testing import assert_same_text
from intro_references import reference_greedy

pytestmark = [
    pytest.mark.question("greedy_generate"),
    pytest.mark.forbidden("transformers.generation.utils.GenerationMixin.generate"),
]


def assert_greedy_matches(submission, model, prompt, gen_len):
    tokenizer = zoo.tiny_tokenizer()
    assert_same_text(submission.greedy_generate(model, tokenizer, prompt, gen_len),
                     reference_greedy(model, tokenizer, prompt, gen_len),
                     what=f"greedy_generate(tiny {model.config.model_type}, {prompt!r}, gen_len={gen_len})")


@pytest.mark.points(2)
def test_matches_transformers_on_llama(submission):
    assert_greedy_matches(submission, zoo.tiny_model("llama"), "Once upon a time", 8)


@pytest.mark.points(1)
def test_one_token_prompt_on_qwen2(submission):
    """A one-token prompt catches loops that assume the input already has several positions."""
    assert_greedy_matches(submission, zoo.tiny_model("qwen2"), "The", 10)


@pytest.mark.gpu
@pytest.mark.points(0)
def test_model_on_cuda(submission):
    """The input ids must follow the model onto its device."""
    assert_greedy_matches(submission, zoo.tiny_model("llama", device="cuda"), "Attention", 6)
