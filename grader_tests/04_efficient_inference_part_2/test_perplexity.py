"""perplexity(model, tokenizer, texts): exp of the mean NLL over all predicted tokens of all texts."""

import pytest
import torch

from autograder import zoo
from autograder.testing import assert_close
from quant_references import token_level_perplexity

pytestmark = pytest.mark.question("perplexity")

# Very different lengths: averaging per text instead of per token gives a clearly different number.
TEXTS = [
    "The cat sat.",
    "Quantization stores each weight in fewer bits, so a large language model fits into the memory of a "
    "small GPU; the price is a little noise in every matrix multiplication.",
    "Hello world, hello model.",
]
RTOL = 1e-4
ONE_TOKEN = "The"


def plain_float(value, what: str):
    assert type(value) is float, f"{what}: expected a plain Python float, got {type(value).__name__} (use .item() or math.exp)"
    return value


@pytest.mark.points(2)
def test_matches_token_level_reference(submission):
    model, tokenizer = zoo.tiny_model("llama"), zoo.tiny_tokenizer()
    got = plain_float(submission.perplexity(model, tokenizer, TEXTS), "perplexity(model, tokenizer, texts)")
    assert_close(got, token_level_perplexity(model, tokenizer, TEXTS),
                 rtol=RTOL, atol=0,
                 what="perplexity(model, tokenizer, texts) for 3 texts of different lengths (every predicted "
                      "token of every text weighs the same: exp(total NLL / number of predicted tokens))")


@pytest.mark.points(1)
def test_other_architecture(submission):
    model, tokenizer = zoo.tiny_model("qwen2"), zoo.tiny_tokenizer()
    texts = TEXTS[::-1] + [ONE_TOKEN]
    assert len(tokenizer(ONE_TOKEN).input_ids) == 1
    assert_close(submission.perplexity(model, tokenizer, texts), token_level_perplexity(model, tokenizer, texts),
                 rtol=RTOL, atol=0, what=f"perplexity(...) of the tiny Qwen2 model on 4 texts, the last one a single "
                                         f"token ({ONE_TOKEN!r}: it predicts nothing and adds nothing to the average)")


@pytest.mark.points(1)
def test_single_text_is_exp_of_the_models_loss(submission):
    model, tokenizer = zoo.tiny_model("llama"), zoo.tiny_tokenizer()
    ids = tokenizer(TEXTS[1], return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model(ids, labels=ids).loss.double().exp().item()
    assert_close(submission.perplexity(model, tokenizer, [TEXTS[1]]), expected, rtol=RTOL, atol=0,
                 what="perplexity(model, tokenizer, [text]) (for one text: exp of the model's mean token loss)")
