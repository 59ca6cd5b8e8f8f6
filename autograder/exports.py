"""Grade CSV for the LMS (Moodle's grade import first): one row per submission.

Plain UTF-8 without a byte order mark, a header row, numbers with at most two decimals and a dot,
which is what Moodle's CSV grade import reads without asking.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

from autograder.config import Assignment
from autograder.gradebook import Gradebook, SubmissionResult

INCOMPLETE = "incomplete (needs GPU runner)"


def export_csv(
    gradebook: Gradebook,
    assignment: Assignment,
    out_path_or_file: str | Path | IO[str],
    questions: list[str] | None = None,
) -> int:
    """Write the grades of `assignment`; return the number of submission rows.

    `questions` fixes the order of the question columns; questions found in the results but not
    listed follow it, so the question columns always add up to `total`.
    """
    submissions = gradebook.submissions(assignment.id)
    columns = dict.fromkeys(questions or [])
    for sub in submissions:
        columns.update(dict.fromkeys(sub.per_question()))  # known questions keep their place
    header = ["submission", *columns, "total", "possible", "late_penalty_percent", "final", "status"]
    rows = [_row(sub, assignment, list(columns)) for sub in submissions]
    if isinstance(out_path_or_file, (str, Path)):
        path = Path(out_path_or_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            _write(f, header, rows)
    else:
        _write(out_path_or_file, header, rows)
    return len(rows)


def _write(f: IO[str], header: list[str], rows: list[list[str]]) -> None:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _row(sub: SubmissionResult, assignment: Assignment, questions: list[str]) -> list[str]:
    per_question = sub.per_question()
    penalty = _late_penalty_percent(sub, assignment)
    # A notebook that could not be read has no test results, yet is still out of the assignment's points.
    possible = sub.possible if sub.results else assignment.points
    return [
        sub.submission_id,
        *(_number(per_question.get(q, (0.0, 0.0))[0]) for q in questions),
        _number(sub.earned),
        _number(possible),
        _number(penalty),
        _number(sub.earned * (100 - penalty) / 100),
        _status(sub),
    ]


def _late_penalty_percent(sub: SubmissionResult, assignment: Assignment) -> float:
    if sub.submitted_at is None:
        return 0.0
    days_late = (sub.submitted_at - assignment.due).total_seconds() / 86400
    return assignment.late_policy.penalty_percent(days_late)


def _status(sub: SubmissionResult) -> str:
    if sub.status == "error":
        return "error"
    return INCOMPLETE if sub.incomplete else "graded"


def _number(value: float) -> str:
    """At most two decimals, no trailing zeros: 5, 7.5, 3.33."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
