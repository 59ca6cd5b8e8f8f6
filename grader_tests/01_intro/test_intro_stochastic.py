"""stochastic_generate: degenerate settings must reproduce greedy decoding, and the seeded generator
must control the draws. (The sampled distribution itself is graded on sample_next_token.)"""

import pytest
import torch

from autograder import zoo
from autograder.testing import assert_same_text
from intro_references import reference_greedy

pytestmark = [
    pytest.mark.question("stochastic_generate"),
    pytest.mark.forbidden("transformers.generation.utils.GenerationMixin.generate"),
]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.points(1)
def test_top_k_one_and_tiny_top_p_are_greedy(submission):
    model, tokenizer = zoo.tiny_model("llama"), zoo.tiny_tokenizer()
    greedy = reference_greedy(model, tokenizer, "Once upon a time", 8)
    for name, value in (("top_k", 1), ("top_p", 1e-4)):
        text = submission.stochastic_generate(model, tokenizer, "Once upon a time", 8, generator=seeded(50),
                                              **{name: value})
        assert_same_text(text, greedy, what=f"stochastic_generate(tiny llama, 'Once upon a time', 8, {name}={value}), "
                                            "which must equal greedy decoding,")


@pytest.mark.points(1)
def test_temperature_near_zero_is_greedy(submission):
    model, tokenizer = zoo.tiny_model("qwen2"), zoo.tiny_tokenizer()
    text = submission.stochastic_generate(model, tokenizer, "The", 8, temperature=1e-3, generator=seeded(51))
    assert_same_text(text, reference_greedy(model, tokenizer, "The", 8),
                     what="stochastic_generate(tiny qwen2, 'The', 8, temperature=0.001), which must equal "
                          "greedy decoding,")


@pytest.mark.points(1)
def test_seeded_generator_controls_the_draws(submission):
    model, tokenizer = zoo.tiny_model("llama"), zoo.tiny_tokenizer()
    first = submission.stochastic_generate(model, tokenizer, "Attention", 10, generator=seeded(52))
    again = submission.stochastic_generate(model, tokenizer, "Attention", 10, generator=seeded(52))
    assert_same_text(again, first, what="stochastic_generate(tiny llama, 'Attention', 10) run again with a "
                                        "generator seeded alike (pass `generator` on to the sampler)")

    # One new token per call under top_k=3: every text must end in one of the 3 most likely tokens.
    # At temperature 2 they have probabilities of about 0.36, 0.33 and 0.31, so 16 seeds all drawing
    # the same token happen to a correct sampler with probability 0.36**16 + 0.33**16 + 0.31**16 < 2e-7.
    prompt = "Once upon a time"
    prompt_ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        top3 = model(torch.tensor([prompt_ids])).logits[0, -1].topk(3).indices.tolist()
    allowed = {tokenizer.decode(prompt_ids + [t]) for t in top3}
    texts = [submission.stochastic_generate(model, tokenizer, prompt, 1, temperature=2.0, top_k=3,
                                            generator=seeded(seed)) for seed in range(60, 76)]
    outside = [t for t in texts if t not in allowed]
    assert not outside, f"with top_k=3 the new token must be one of {sorted(allowed)}, got {outside[0]!r}"
    assert len(set(texts)) > 1, f"16 differently seeded generators all produced {texts[0]!r}: is the generator used?"
