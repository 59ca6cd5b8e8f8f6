"""End to end: every bundled sample submission gets exactly the score its expected.json states.

Each assignment's samples are graded as one batch, as a TA would grade an LMS download: correct and
alternative solutions, realistic mistakes and the integrity cases (exits, endless loops, patched
asserts, forged equality, frame peeking, reading the hidden suite, forbidden APIs).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_the_batch_completes_without_grader_failures(sample_batch):
    batch = sample_batch
    assert batch.failures == {}
    assert sorted(batch.graded_ids) == sorted(batch.samples) == sorted(batch.results) and batch.skipped == []
    assert sorted(batch.expected) == sorted(batch.samples), "every sample needs an expected score, and only samples"


def test_each_sample_gets_the_score_it_deserves(sample_batch):
    results, expected = sample_batch.results, sample_batch.expected
    wrong = {sid: (results[sid].earned, want["points"]) for sid, want in expected.items()
             if results[sid].earned != want["points"]}
    details = {sid: [f"{t.test_id}: {t.status}: {t.message[:120]}" for t in results[sid].results
                     if t.status != "passed"] for sid in wrong}
    assert wrong == {}, details


def test_declared_gpu_points_fit_the_gpu_marked_tests(sample_batch):
    """`gpu_points` (compared by `make gpu-check` on CUDA) lies within what the GPU-marked tests give, and a
    sample with full CPU marks that keeps the GPU rule declares all of it."""
    full = sample_batch.expected["correct"]["points"]
    for sid, want in sample_batch.expected.items():
        if "gpu_points" not in want:
            continue
        waiting = sum(t.points_possible for t in sample_batch.results[sid].results if t.status == "needs-gpu")
        assert 0 <= want["gpu_points"] <= waiting, sid
        if sid in ("correct", "alternative_correct") and want["points"] == full:
            assert want["gpu_points"] == waiting, sid


def test_no_sample_triggers_a_grader_error(sample_batch):
    errors = {sid: [t.test_id for t in r.results if t.status == "error"] for sid, r in sample_batch.results.items()}
    assert {sid: e for sid, e in errors.items() if e} == {}


def test_mistakes_score_less_than_the_solution_with_a_message(sample_batch):
    results = sample_batch.results
    full = results["correct"].earned
    for sid, want in sample_batch.expected.items():
        if want["points"] < full:
            failed = [t for t in results[sid].results if t.status in ("failed", "timeout")]
            assert failed and all(t.message for t in failed), sid


def test_a_rerun_skips_everything_already_graded(sample_batch):
    graded_again, skipped, failures = sample_batch.rerun
    assert graded_again == [] and sorted(skipped) == sorted(sample_batch.samples) and failures == {}
