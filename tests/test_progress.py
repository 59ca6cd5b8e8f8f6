"""Progress of a `grade` batch: done/total, rate, time left, students' failures apart from grader failures."""

from __future__ import annotations

import datetime as dt

import nbformat
import pytest
from rich.console import Console

from autograder.cli import _BatchProgress, main
from autograder.course.gradebook import SubmissionResult, TestResult
from autograder.grading.scheduler import Job
from conftest import ASSIGNMENT, CORRECT, write_notebook


def _result(sid: str, *statuses: str, status: str = "graded") -> SubmissionResult:
    tests = [TestResult(f"test_{n}", "q", s, 1.0 if s == "passed" else 0.0, 1.0, "", 0.1) for n, s in enumerate(statuses)]
    return SubmissionResult(ASSIGNMENT, sid, f"{sid}.ipynb", "hash", "suite", "0", "cpu", status,
                            "unreadable" if status == "error" else "", tests, dt.datetime.now(dt.timezone.utc))


def _job(sid: str) -> Job:
    return Job("course", ASSIGNMENT, sid, f"{sid}.ipynb", "suite")


def test_plain_lines_count_students_failures_apart_from_grader_failures(capsys):
    progress = _BatchProgress(ASSIGNMENT, Console(stderr=True), live=False)
    with progress:
        progress.start(6)
        outcomes = {"full": _result("full", "passed", "passed"), "wrong": _result("wrong", "passed", "failed"),
                    "slow": _result("slow", "timeout", "passed"), "unreadable": _result("unreadable", status="error"),
                    "grader_error": _result("grader_error", "passed", "error"), "lost": RuntimeError("worker died")}
        for sid, outcome in outcomes.items():
            progress.done(_job(sid), outcome)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines] == [
        "full: 2/2", "wrong: 1/2", "slow: 1/2", "unreadable: 0/0", "grader_error: 1/2", "lost: grader failure"]
    assert lines[0].split(" | ")[1].startswith("1/6 graded, ")
    assert lines[-1].split(" | ")[1].startswith("6/6 graded, ") and lines[-1].endswith(
        "0m00s left, 3 failing, 2 grader failures")
    assert (progress.recorded, progress.failing, progress.grader_failures) == (5, 3, 2)


def test_rate_and_time_left_follow_the_submissions_done():
    progress = _BatchProgress(ASSIGNMENT, Console(stderr=True), live=False)
    progress.start(10)
    assert progress.summary(now=progress.began + 5) == "0/10 graded, --/min, -- left, 0 failing, 0 grader failures"
    progress.finished = 4
    assert progress.summary(now=progress.began + 120) == \
        "4/10 graded, 2.0/min, 3m00s left, 0 failing, 0 grader failures"


def test_a_terminal_gets_the_bar_and_no_plain_lines(capsys):
    progress = _BatchProgress(ASSIGNMENT, Console(stderr=True, force_terminal=True), live=True)
    with progress:
        progress.start(2)
        progress.done(_job("full"), _result("full", "passed"))
    assert capsys.readouterr().out == ""
    assert progress.failing == progress.grader_failures == 0 and progress.finished == 1


@pytest.mark.slow
def test_grade_prints_one_line_per_submission_when_stdout_is_not_a_terminal(make_course, tmp_path, capsys):
    batch = tmp_path / "batch"
    write_notebook(batch / "team_correct.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    write_notebook(batch / "team_empty.ipynb", [nbformat.v4.new_code_cell("import torch")])
    assert main(["--course-root", str(make_course()), "grade", ASSIGNMENT, str(batch), "--gradebook",
                 str(tmp_path / "gradebook.db"), "--jobs", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " graded, " in line]
    assert sorted(line.split(" | ")[0] for line in lines) == ["team_correct: 1/1", "team_empty: 0/1"]
    assert lines[-1].endswith(", 1 failing, 0 grader failures") and " | 2/2 graded, " in lines[-1]
