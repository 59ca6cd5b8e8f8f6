"""Trusted references for the 01_intro suite: the libraries' own code, and the statistics of sampling.

Filters come from `transformers`' logits processors and greedy text from `model.generate`, so the
student is compared with what the lecture calls top-k, top-p and greedy decoding in practice.
The module name is unique to this assignment, so suites of several assignments can share a session.
"""

import torch
from autograder.testing import assert_close, reference
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

# The library's own logits warpers do what tasks 3-5 ask students to write: calling one (directly, through
# a LogitsProcessorList or any other wrapper) fails the test that made the call. Not forbidden in the
# sampling and generation tests: a forbidden API puts torch's function and dispatch modes around every
# call, which made a correct per-row Python loop over 20,000 rows ten times slower, past the call timeout.
LOGITS_WARPERS = tuple(f"transformers.generation.logits_process.{name}.__call__"
                       for name in ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"))

# Each goodness-of-fit check fails a correct sampler with probability ALPHA. The suite runs eight of
# them, so a correct submission loses points in at most 8 * 1e-6 = 8e-6 of runs (well below 1e-4).
ALPHA = 1e-6


@reference
def reference_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    return TopKLogitsWarper(top_k=k)(None, logits)


@reference
def reference_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    return TopPLogitsWarper(top_p=p)(None, logits)


@reference
def reference_greedy(model, tokenizer, prompt: str, gen_len: int) -> str:
    encoded = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        ids = model.generate(**encoded, do_sample=False, max_new_tokens=gen_len)
    return tokenizer.decode(ids[0])


def assert_same_filter(result, logits: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Name the first token kept or removed by mistake, then compare values, dtype and device."""
    if isinstance(result, torch.Tensor) and result.shape == expected.shape:
        removed, should_remove = result.cpu().isneginf(), expected.cpu().isneginf()
        wrong = removed != should_remove
        if wrong.any():
            row, token = (int(i) for i in wrong.nonzero()[0])
            count = f"{int(wrong.sum())} token(s) differ from the reference"
            if not should_remove[row, token]:
                most_likely = token == int(logits[row].argmax())
                name = "the most likely token" if most_likely else "token"
                raise AssertionError(f"{what}: your filter removed {name} {token} in row {row}, which must be "
                                     f"kept{' always' if most_likely else ''} ({count})")
            raise AssertionError(f"{what}: token {token} in row {row} should have been set to -inf but was "
                                 f"kept ({count})")
    assert_close(result, expected, what=what)


def assert_leaves_its_input_alone(submission, function: str, logits: torch.Tensor, *args) -> None:
    """The notebook: "Return a new tensor of the same shape and dtype; do not modify the input"."""
    with submission.changed_inputs() as changed:
        getattr(submission, function)(logits, *args)
    assert changed.per_call[0][1] == [], (f"{function} changed the logits it was given (in place): return a new "
                                          "tensor and leave the input as it was")


@reference
def sampling_distribution(logits_row: torch.Tensor, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """The distribution `generate(do_sample=True)` draws from: temperature, top-k, top-p, softmax."""
    scores = logits_row.double()[None]
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k is not None:
        scores = reference_top_k(scores, top_k)
    if top_p is not None:
        scores = reference_top_p(scores, top_p)
    return scores.softmax(dim=-1)[0]


def chi_square_p_value(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof) = Q(dof / 2, statistic / 2), the regularized upper
    incomplete gamma function (scipy.stats.chi2.sf computes the same)."""
    return torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                   torch.tensor(statistic / 2, dtype=torch.float64)).item()


def assert_draws_follow(draws, probs: torch.Tensor, what: str) -> None:
    """Draws of token ids must avoid every probability-0 token and pass a chi-square goodness of fit."""
    if type(draws) is not torch.Tensor:
        raise AssertionError(f"{what}: expected a LongTensor of token ids, got {type(draws).__name__}")
    if draws.dtype != torch.long:
        raise AssertionError(f"{what}: expected token ids of dtype torch.int64 (long), got {draws.dtype}")
    if draws.dim() != 1:
        raise AssertionError(f"{what}: expected shape [batch] (one token id per row), got {list(draws.shape)}")
    vocab = probs.numel()
    if draws.numel() and (draws.min() < 0 or draws.max() >= vocab):
        raise AssertionError(f"{what}: token ids must lie in [0, {vocab}), got ids from "
                             f"{int(draws.min())} to {int(draws.max())}")
    counts = torch.bincount(draws, minlength=vocab).double()
    n = draws.numel()
    forbidden = (probs == 0) & (counts > 0)
    if forbidden.any():
        token = int(forbidden.nonzero()[0])
        raise AssertionError(f"{what}: token {token} has probability 0 after filtering but was drawn "
                             f"{int(counts[token])} times out of {n}")
    # Pearson's statistic over the tokens that can be drawn; callers make every one of them expect
    # dozens of draws, where the chi-square approximation is accurate.
    expected = probs * n
    possible = probs > 0
    statistic = float(((counts[possible] - expected[possible]) ** 2 / expected[possible]).sum())
    p_value = chi_square_p_value(statistic, int(possible.sum()) - 1)
    if p_value < ALPHA:
        worst = int(((counts - expected).abs() / expected.clamp_min(1).sqrt()).argmax())
        raise AssertionError(
            f"{what}: the {n} draws do not follow the expected distribution (chi-square p-value "
            f"{p_value:.2g}); e.g. token {worst} was drawn {counts[worst] / n:.2%} of the time but has "
            f"probability {probs[worst]:.2%}")


def random_logits(rows: int, vocab: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """Seeded logits with a spread like a real model's (the CPU generator makes them device independent)."""
    return scale * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))
