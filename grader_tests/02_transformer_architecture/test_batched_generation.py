"""batched_greedy_generate: one left-padded batch must reproduce greedy decoding of each prompt alone."""

import pytest

from autograder import zoo

from transformer_references import assert_close_or_diagnose, generate_per_prompt

pytestmark = [
    pytest.mark.question("batched_greedy_generate"),
    pytest.mark.forbidden("transformers.generation.utils.GenerationMixin.generate"),
]

PADDING_HINT = ("pad on the left (tokenizer(..., padding=True, padding_side='left')), pass the attention_mask, "
                "extend it by one column per new token, and pick each row's next token from the last position.")
PADDED_ROWS_WRONG = ("the longest prompt, which needs no padding, is right, but the padded ones are not: "
                     "are you padding on the right (the tokenizer's default)? Decoder-only models continue from "
                     "the last position, so pad on the left and pass the attention_mask.")


def check_batch(submission, model, tokenizer, prompts, gen_len, what):
    """Compare with each prompt generated alone; name padding when only the unpadded row is right."""
    actual = submission.batched_greedy_generate(model, tokenizer, prompts, gen_len)
    expected = generate_per_prompt(model, tokenizer, prompts, gen_len)
    unpadded = max(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i]).input_ids))
    only_unpadded_right = (isinstance(actual, list) and len(actual) == len(expected) and actual != expected
                           and actual[unpadded] == expected[unpadded])
    assert_close_or_diagnose(actual, expected, what=what,
                             hint=PADDED_ROWS_WRONG if only_unpadded_right else PADDING_HINT)


@pytest.mark.points(1)
def test_prompts_of_different_lengths(submission, llama, tokenizer):
    prompts = ["The cat sat on the mat", "Attention", "Rotary position embeddings rotate queries and keys"]
    check_batch(submission, llama, tokenizer, prompts, 8,
                what="batched_greedy_generate(tiny llama, 3 prompts of different lengths, 8)")


@pytest.mark.points(1)
def test_one_token_prompt_in_a_qwen2_batch(submission, qwen2, tokenizer):
    prompts = ["A", "Large language models generate text one token at a time"]
    check_batch(submission, qwen2, tokenizer, prompts, 6,
                what="batched_greedy_generate(tiny qwen2, ['A', <a long prompt>], 6)")


@pytest.mark.points(1)
def test_batch_of_one(submission, llama, tokenizer):
    check_batch(submission, llama, tokenizer, ["Batching needs padding"], 5,
                what="batched_greedy_generate(tiny llama, one prompt, 5)")


@pytest.mark.points(1)
def test_calls_the_model_with_the_whole_batch(submission, llama, tokenizer):
    """A loop over the prompts, one at a time, returns the right texts; only the batch size of the
    model's forward calls (counted in the sandbox) tells it from one padded batch."""
    prompts = ["Padding goes left", "A", "Every prompt of the batch is run together"]
    with submission.fed_tokens() as fed:
        check_batch(submission, llama, tokenizer, prompts, 4,
                    what="batched_greedy_generate(tiny llama, 3 prompts, 4)")
    assert fed.batch_sizes and set(fed.batch_sizes) == {len(prompts)}, (
        f"batched_greedy_generate called the model with batch sizes {fed.batch_sizes} for {len(prompts)} "
        f"prompts: run all prompts as one left-padded batch in every forward call, not one prompt at a time.")


@pytest.mark.gpu
@pytest.mark.points(0)
def test_on_cuda(submission, tokenizer):
    check_batch(submission, zoo.tiny_model("llama", device="cuda"), tokenizer, ["GPU", "Batches fill the GPU"], 5,
                what="batched_greedy_generate(tiny llama on CUDA, 2 prompts, 5) (move the batch to model.device)")
