"""End to end: every bundled sample submission gets exactly the score its expected.json states.

Each assignment's samples are graded as one batch, as a TA would grade an LMS download: correct and
alternative solutions, realistic mistakes and the integrity cases (exits, endless loops, patched
asserts, forged equality, frame peeking, reading the hidden suite, forbidden APIs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autograder.config import load_course
from autograder.gradebook import Gradebook
from autograder.handins import discover
from autograder.scheduler import grade_batch

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "samples").iterdir() if (p / "expected.json").exists())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ASSIGNMENTS)
def graded(request, tmp_path_factory):
    assignment = load_course(ROOT).get(request.param)
    samples = discover([ROOT / "samples" / assignment.id]).handins
    db = tmp_path_factory.mktemp("gradebook") / "gradebook.db"
    with Gradebook.open(db) as gradebook:
        graded_ids, skipped, failures = grade_batch(assignment, samples, gradebook)
        results = {r.submission_id: r for r in gradebook.submissions(assignment.id)}
        rerun = grade_batch(assignment, samples, gradebook)
    expected = json.loads((ROOT / "samples" / assignment.id / "expected.json").read_text())
    return assignment, samples, graded_ids, skipped, failures, results, expected, rerun


def test_the_batch_completes_without_grader_failures(graded):
    _, samples, graded_ids, skipped, failures, results, expected, _ = graded
    assert failures == {}
    assert sorted(graded_ids) == sorted(samples) == sorted(results) and skipped == []
    assert sorted(expected) == sorted(samples), "every sample needs an expected score, and only samples"


def test_each_sample_gets_the_score_it_deserves(graded):
    assignment, _, _, _, _, results, expected, _ = graded
    wrong = {sid: (results[sid].earned, want["points"]) for sid, want in expected.items()
             if results[sid].earned != want["points"]}
    details = {sid: [f"{t.test_id}: {t.status}: {t.message[:120]}" for t in results[sid].results
                     if t.status != "passed"] for sid in wrong}
    assert wrong == {}, details


def test_no_sample_triggers_a_grader_error(graded):
    _, _, _, _, _, results, _, _ = graded
    errors = {sid: [t.test_id for t in r.results if t.status == "error"] for sid, r in results.items()}
    assert {sid: e for sid, e in errors.items() if e} == {}


def test_mistakes_score_less_than_the_solution_with_a_message(graded):
    assignment, _, _, _, _, results, expected, _ = graded
    full = results["correct"].earned
    for sid, want in expected.items():
        if want["points"] < full:
            failed = [t for t in results[sid].results if t.status in ("failed", "timeout")]
            assert failed and all(t.message for t in failed), sid


def test_a_rerun_skips_everything_already_graded(graded):
    _, samples, _, _, _, _, _, rerun = graded
    graded_again, skipped, failures = rerun
    assert graded_again == [] and sorted(skipped) == sorted(samples) and failures == {}
