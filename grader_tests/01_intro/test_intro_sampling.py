"""sample_next_token, graded statistically: 20,000 identical rows in one call give 20,000 seeded draws.

Each draw set must avoid every filtered-out token and pass a chi-square goodness-of-fit test
against the distribution `generate(do_sample=True)` samples from (see intro_references.ALPHA).
"""

import pytest
import torch

from intro_references import assert_draws_follow, random_logits, sampling_distribution

pytestmark = pytest.mark.question("sample_next_token")

DRAWS = 20_000
# One row of 10 logits with the most likely token at index 6, not at index 0. Under every setting
# below, each token that can be drawn expects at least 44 of the 20,000 draws.
ROW = random_logits(1, 10, seed=40, scale=1.2)[0]


def assert_sampler_follows(submission, seed, **settings):
    draws = submission.sample_next_token(ROW.repeat(DRAWS, 1), generator=torch.Generator().manual_seed(seed),
                                         **settings)
    shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    assert_draws_follow(draws, sampling_distribution(ROW, **settings),
                        what=f"sample_next_token([{DRAWS}, 10] logits, {shown})")
    return draws


@pytest.mark.points(1)
def test_draws_follow_the_softmax_and_the_generator(submission):
    first = assert_sampler_follows(submission, seed=41)
    again = submission.sample_next_token(ROW.repeat(DRAWS, 1), generator=torch.Generator().manual_seed(41))
    assert torch.equal(first, again), ("two calls with generators seeded alike gave different draws: "
                                       "pass `generator` to the random function (e.g. torch.multinomial)")


@pytest.mark.points(1)
def test_temperature_reshapes_the_distribution(submission):
    assert_sampler_follows(submission, seed=42, temperature=0.5)
    assert_sampler_follows(submission, seed=43, temperature=2.0)


@pytest.mark.points(1)
def test_top_k_draws_only_the_k_most_likely(submission):
    assert_sampler_follows(submission, seed=44, top_k=3)
    assert_sampler_follows(submission, seed=45, temperature=0.8, top_k=5)


@pytest.mark.points(1)
def test_top_p_applies_after_temperature_and_top_k(submission):
    assert_sampler_follows(submission, seed=46, temperature=1.5, top_p=0.6)
    assert_sampler_follows(submission, seed=47, temperature=0.7, top_k=6, top_p=0.8)
