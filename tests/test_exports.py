import csv
import dataclasses
import datetime as dt
import io
import zoneinfo
from pathlib import Path

import pytest

from autograder.config import Assignment, LatePolicy, Limits, Tolerance
from autograder.exports import export_csv
from autograder.gradebook import Gradebook, SubmissionResult, TestResult

UTC = dt.timezone.utc
ASSIGNMENT = Assignment(
    id="01_intro",
    title="First contact with open LLMs",
    due=dt.datetime(2027, 4, 27, 23, 59, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),  # 21:59 UTC
    points=5,
    gpu=False,
    tolerances={"fp32": Tolerance(1e-4, 1e-5)},
    late_policy=LatePolicy(percent_per_day=10, cap_percent=50),
    extraction="definitions",
    limits=Limits(call_timeout_s=20, submission_timeout_s=300, memory_mb=4096),
    root=Path("."),
)
HEADER = ["submission", "tokenize", "generate", "total", "possible", "late_penalty_percent", "final", "status"]


def graded(submission_id, verdicts, submitted_at=None, status="graded", message=""):
    """verdicts: (question, status, points) per test; a passed test earns its points."""
    results = [
        TestResult(f"test_{q}.py::test_{i}", q, s, points if s == "passed" else 0.0, points, "", 0.1)
        for i, (q, s, points) in enumerate(verdicts)
    ]
    return SubmissionResult(
        "01_intro", submission_id, f"{submission_id}.ipynb", "nb", "suite", "0.1.0", "cpu", status, message,
        results, graded_at=dt.datetime(2027, 5, 1, tzinfo=UTC), submitted_at=submitted_at,
    )


@pytest.fixture
def gradebook(tmp_path):
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        # On time: 23:00 in Berlin.
        all_passed = [("tokenize", "passed", 1), ("tokenize", "passed", 1), ("generate", "passed", 3)]
        gb.record(graded("team01", all_passed, submitted_at=dt.datetime(2027, 4, 27, 21, 0, tzinfo=UTC)))
        # 00:30 in Berlin on the 29th: one day and 31 minutes late, two started days.
        one_failed = [("tokenize", "passed", 1), ("tokenize", "failed", 1), ("generate", "passed", 3)]
        gb.record(graded("team02", one_failed, submitted_at=dt.datetime(2027, 4, 28, 22, 30, tzinfo=UTC)))
        gb.record(graded("team03", [("tokenize", "passed", 2), ("generate", "needs-gpu", 3)]))
        # Ten days late: the penalty stops at the cap.
        gb.record(graded("team04", [], status="error", message="the notebook is not valid JSON",
                         submitted_at=dt.datetime(2027, 5, 7, 22, 0, tzinfo=UTC)))
        gb.record(dataclasses.replace(graded("team00", []), assignment="02_attention"))
        yield gb


def test_one_row_per_submission_with_late_penalty_and_status(gradebook, tmp_path):
    out = tmp_path / "exports" / "01_intro.csv"
    assert export_csv(gradebook, ASSIGNMENT, out) == 4
    assert out.read_bytes().startswith(b"submission,tokenize,generate,total,")  # no byte order mark
    assert list(csv.reader(out.read_text(encoding="utf-8").splitlines())) == [
        HEADER,
        ["team01", "2", "3", "5", "5", "0", "5", "graded"],
        ["team02", "1", "3", "4", "5", "20", "3.2", "graded"],
        ["team03", "2", "0", "2", "5", "0", "2", "incomplete (needs GPU runner)"],
        ["team04", "0", "0", "0", "5", "50", "0", "error"],
    ]


def test_numbers_have_at_most_two_decimals(tmp_path):
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(graded("team01", [("tokenize", "passed", 1 / 3), ("tokenize", "passed", 2.5)]))
        out = io.StringIO()
        export_csv(gb, ASSIGNMENT, out)
    assert out.getvalue().splitlines()[1] == "team01,2.83,2.83,2.83,0,2.83,graded"


def test_given_questions_fix_the_column_order_and_unlisted_ones_follow(gradebook):
    out = io.StringIO()
    export_csv(gradebook, ASSIGNMENT, out, questions=["reflection", "generate"])
    header, team01, *_ = csv.reader(io.StringIO(out.getvalue()))
    assert header[:4] == ["submission", "reflection", "generate", "tokenize"]
    assert team01[:5] == ["team01", "0", "3", "2", "5"]


def test_a_file_object_gets_the_same_csv_as_a_path(gradebook, tmp_path):
    out = io.StringIO()
    export_csv(gradebook, ASSIGNMENT, out)
    export_csv(gradebook, ASSIGNMENT, tmp_path / "grades.csv")
    assert out.getvalue() == (tmp_path / "grades.csv").read_bytes().decode("utf-8")
