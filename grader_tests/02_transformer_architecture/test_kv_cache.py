"""generate_with_kv_cache: a hand-written cached decoding loop must equal decoding without a cache."""

import pytest
import torch

from autograder import zoo

from transformer_references import assert_close_or_diagnose, greedy_without_cache

pytestmark = [
    pytest.mark.question("generate_with_kv_cache"),
    pytest.mark.forbidden("transformers.generation.utils.GenerationMixin.generate"),
]

CACHE_HINT = ("feed the prompt once with use_cache=True, then at every step only the newest token "
              "(shape [batch, 1]) together with the cache the previous step returned.")


def prompt_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random ordinary token ids (the special tokens 0-2 are avoided)."""
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed))


def generate_with_the_cache(submission, model, ids: torch.Tensor, gen_len: int, what: str):
    """The submission's tokens, once it is shown to have used the cache. A loop that re-feeds the whole
    sequence and ignores the cache returns exactly the right tokens, so only what the model received can
    expose it: the model lives in the sandbox, and for every forward call of a zoo model during a
    submission call the grader counts how many token positions its input embedding received. Every
    test checks it, so skipping the cache the task teaches earns none of its points. Returns the tokens
    and the positions fed per forward call."""
    with submission.fed_tokens() as fed:
        out = submission.generate_with_kv_cache(model, ids, gen_len)
    prompt_len = ids.shape[1]
    assert sum(fed.per_call) <= prompt_len + gen_len, (
        f"{what} fed the model {sum(fed.per_call)} token positions in {len(fed.per_call)} forward calls (the "
        f"longest input {max(fed.per_call)}) for a {prompt_len}-token prompt and {gen_len} new tokens; a KV cache "
        f"needs at most {prompt_len + gen_len}: {CACHE_HINT}")
    return out, fed.per_call


@pytest.mark.points(1)
def test_matches_decoding_without_a_cache(submission, llama):
    ids, what = prompt_ids(1, 7, seed=300), "generate_with_kv_cache(tiny llama, a 7-token prompt, 8)"
    assert_close_or_diagnose(generate_with_the_cache(submission, llama, ids, 8, what)[0],
                             greedy_without_cache(llama, ids, 8), what=what, hint=CACHE_HINT)


@pytest.mark.points(1)
def test_batch_of_two_on_qwen2(submission, qwen2):
    ids, what = prompt_ids(2, 5, seed=310), "generate_with_kv_cache(tiny qwen2, 2 prompts of 5 tokens, 6)"
    assert_close_or_diagnose(generate_with_the_cache(submission, qwen2, ids, 6, what)[0],
                             greedy_without_cache(qwen2, ids, 6), what=what, hint=CACHE_HINT)


@pytest.mark.points(1)
def test_feeds_only_the_newest_token(submission, llama):
    ids, what = prompt_ids(1, 6, seed=320), "generate_with_kv_cache(tiny llama, a 6-token prompt, 5)"
    out, per_call = generate_with_the_cache(submission, llama, ids, 5, what)
    assert per_call[:1] == [6] and set(per_call[1:]) <= {1}, (
        f"{what} fed the model {per_call[0] if per_call else 0} positions in its first forward call and up to "
        f"{max(per_call[1:], default=0)} in a later one, where the prompt is 6 and each later input 1: {CACHE_HINT}")
    assert_close_or_diagnose(out, greedy_without_cache(llama, ids, 5), what=what, hint=CACHE_HINT)


@pytest.mark.gpu
@pytest.mark.points(0)
def test_on_cuda(submission):
    llama, ids = zoo.tiny_model("llama", device="cuda"), prompt_ids(2, 5, seed=330).cuda()
    assert_close_or_diagnose(submission.generate_with_kv_cache(llama, ids, 6), greedy_without_cache(llama, ids, 6),
                             what="generate_with_kv_cache(tiny llama on CUDA, 2 prompts of 5 tokens, 6)",
                             hint=CACHE_HINT)
