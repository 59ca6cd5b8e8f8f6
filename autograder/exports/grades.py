"""Stage 9: what leaves the gradebook.

- a grade CSV for the LMS (Moodle's grade import first): one row per submission, plain UTF-8 without a
  byte order mark, numbers with at most two decimals and a dot, which Moodle reads without asking;
- one HTML feedback page per team: every check with its result and the message the student can act
  on; grader errors appear as a neutral notice, and no hidden test source is ever shown;
- Gradescope's `results.json` per submission, for courses that collect through Gradescope;
- an instructor summary: score distribution, points per question and the tests students fail most
  (or that the grader itself failed), as an HTML page with plots.

Submission ids come from folder and file names, so they may be anything: file names made from them
are safe and unique (`file_names`), CSV cells a spreadsheet would evaluate are neutralised, and a page
that cannot be written does not stop the others (`ExportError` names it afterwards).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO

from autograder.course.config import Assignment
from autograder.course.gradebook import TEST_STATUSES, Gradebook, SubmissionResult
from autograder.course.roster import Roster
from autograder.exports.formats import page_template, text_cell
from autograder.exports.manual import manual_cells, ungraded, with_manual_scores
from autograder.grading.handins import graded_name

WAITING_FOR = {"needs-gpu": "needs GPU runner", "needs-grading": "reflections not graded yet"}
INCOMPLETE = f"incomplete ({WAITING_FOR['needs-gpu']})"
GRADER_ERROR_FOR_STUDENTS = "the grader could not run this check; the course staff will look into it"
MAX_NAME_BYTES = 100  # file systems allow 255 per name; room for suffixes and a marker hash
_UNSAFE_IN_NAMES = re.compile(r"[^\w.-]")  # letters and digits of any script, dot, dash, underscore


class ExportError(Exception):
    """Some files could not be written; all others were. The message names each failure."""


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
    submissions = with_manual_scores(gradebook, assignment)
    columns = dict.fromkeys(questions or [])
    for sub in submissions:
        columns.update(dict.fromkeys(sub.per_question()))  # known questions keep their place
    header = ["submission", *map(text_cell, columns), "total", "possible", "late_penalty_percent", "final", "status"]
    rows = [_row(sub, assignment, list(columns)) for sub in submissions]
    _write(out_path_or_file, header, rows)
    return len(rows)


def export_students_csv(gradebook: Gradebook, assignment: Assignment, roster: Roster,
                        out_path_or_file: str | Path | IO[str]) -> int:
    """One row per student of the roster: their team's grade (late penalty included); a student whose
    team handed nothing in has an empty grade and says so. Returns the number of rows."""
    by_id = {s.submission_id: s for s in with_manual_scores(gradebook, assignment)}
    header = ["student_id", "name", "email", "team", "total", "possible", "late_penalty_percent", "final", "status"]
    rows = []
    for team, member in roster.students():
        person = [text_cell(member.id), text_cell(member.name), text_cell(member.email), text_cell(team.id)]
        sub = by_id.get(team.id)
        if sub is None:
            rows.append([*person, "", _number(total_possible(assignment)), "", "", "no hand-in"])
        else:
            total, possible, penalty, final = grade_of(sub, assignment)
            rows.append([*person, _number(total), _number(possible), _number(penalty), _number(final),
                         grade_status(sub)])
    _write(out_path_or_file, header, rows)
    return len(rows)


def _write(out: str | Path | IO[str], header: list[str], rows: list[list[str]]) -> None:
    if isinstance(out, (str, Path)):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            _write(f, header, rows)
        return
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)


def total_possible(assignment: Assignment) -> float:
    """The autograded points and those of the hand-graded cells."""
    return assignment.points + sum(c.points for c in manual_cells(assignment))


def grade_of(sub: SubmissionResult, assignment: Assignment) -> tuple[float, float, float, float]:
    """(total, possible, late penalty in percent, final) of one submission."""
    penalty = _late_penalty_percent(sub, assignment)
    # A notebook that could not be read has no test results, yet is still out of the assignment's points.
    possible = sub.possible if sub.results else total_possible(assignment)
    return sub.earned, possible, penalty, sub.earned * (100 - penalty) / 100


def _row(sub: SubmissionResult, assignment: Assignment, questions: list[str]) -> list[str]:
    per_question = sub.per_question()
    total, possible, penalty, final = grade_of(sub, assignment)
    return [
        text_cell(sub.submission_id),
        *(_number(per_question.get(q, (0.0, 0.0))[0]) for q in questions),
        _number(total),
        _number(possible),
        _number(penalty),
        _number(final),
        grade_status(sub),
    ]


def file_names(submission_ids) -> dict[str, str]:
    """A file name (without suffix) per submission id: safe on any file system, at most
    `MAX_NAME_BYTES`, unique even where case does not count. An id that is already such a name is
    kept; any other is cleaned and marked with a short hash of the id."""
    names, taken = {}, set()
    for sid in sorted(submission_ids):
        base = _UNSAFE_IN_NAMES.sub("_", sid).lstrip(".") or "submission"
        digest = hashlib.sha256(sid.encode("utf-8", "backslashreplace")).hexdigest()
        name, length = base, 8
        if base != sid or len(base.encode()) > MAX_NAME_BYTES or base.casefold() in taken:
            name = f"{_cut(base, MAX_NAME_BYTES - 1 - length)}-{digest[:length]}"
        while name.casefold() in taken:
            length += 8
            name = f"{_cut(base, MAX_NAME_BYTES - 1 - length)}-{digest[:length]}"
        names[sid] = name
        taken.add(name.casefold())
    return names


def _cut(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode(errors="ignore")


def _write_each(subs: list[SubmissionResult], write) -> list[Path]:
    """`write(sub, name)` for every submission, each under its safe file name; a failure is reported
    once all the others are written."""
    names = file_names(s.submission_id for s in subs)
    written, failed = [], []
    for sub in subs:
        try:
            written.append(write(sub, names[sub.submission_id]))
        except Exception as exc:  # noqa: BLE001 - one team's page must not cost the others theirs
            failed.append(f"{sub.submission_id}: {type(exc).__name__}: {exc}")
    if failed:
        raise ExportError(f"wrote {len(written)} files, but {len(failed)} could not be written:\n  "
                          + "\n  ".join(failed))
    return written


def _late_penalty_percent(sub: SubmissionResult, assignment: Assignment) -> float:
    if sub.submitted_at is None:
        return 0.0
    days_late = (sub.submitted_at - (sub.due or assignment.due)).total_seconds() / 86400  # an extension moves it
    return assignment.late_policy.penalty_percent(days_late)


def grade_status(sub: SubmissionResult) -> str:
    """The status column of every export: graded, error, or incomplete and what it waits for."""
    if sub.status == "error":
        return "error"
    waiting = [why for status, why in WAITING_FOR.items()
               if any(r.status == status and r.points_possible > 0 for r in sub.results)]
    return f"incomplete ({', '.join(waiting)})" if waiting else "graded"


def _number(value: float) -> str:
    """At most two decimals, no trailing zeros: 5, 7.5, 3.33."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def check_title(test_id: str) -> str:
    """`test_top_k.py::test_keeps_the_k_largest[fp16]` -> `keeps the k largest [fp16]`."""
    name = test_id.split("::")[-1]
    base, _, params = name.partition("[")
    title = base.removeprefix("test_").replace("_", " ")
    return f"{title} [{params}" if params else title


def _student_message(status: str, message: str) -> str:
    return GRADER_ERROR_FOR_STUDENTS if status == "error" else message


def write_feedback_pages(gradebook: Gradebook, assignment: Assignment, out_dir: str | Path) -> list[Path]:
    """One self-contained HTML page per submission, `<out_dir>/<file name of the submission>.html`."""
    template = page_template("feedback.html")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = gradebook.handins(assignment.id)

    def write(sub: SubmissionResult, name: str) -> Path:
        questions = defaultdict(list)
        for r in sub.results:
            questions[r.question].append({
                "title": check_title(r.test_id), "status": r.status, "message": _student_message(r.status, r.message),
                "points_earned": r.points_earned, "points_possible": r.points_possible,
            })
        page = template.render(
            assignment=assignment, sub=sub, questions=dict(questions), totals=sub.per_question(),
            warnings=[w for w in sub.load_messages.splitlines() if w], penalty=_late_penalty_percent(sub, assignment),
            graded_file=graded_name(Path(sub.path), f"{assignment.id}.ipynb"),
            handin_notes=[n for n in (records[sub.submission_id].notes if sub.submission_id in records else "").split(
                "\n") if n],
        )
        path = out_dir / f"{name}.html"
        path.write_text(page, encoding="utf-8")
        return path

    return _write_each(with_manual_scores(gradebook, assignment), write)


def gradescope_results(sub: SubmissionResult) -> dict:
    """Gradescope's autograder results format (https://gradescope-autograders.readthedocs.io)."""
    if sub.status == "error":
        return {"score": 0, "output": f"Your notebook could not be graded: {sub.message}", "tests": []}
    return {
        "score": round(sub.earned, 4),
        "execution_time": round(sum(r.duration_s for r in sub.results), 3),
        "output": sub.load_messages,
        "tests": [
            {"name": check_title(r.test_id), "number": r.question, "score": r.points_earned,
             "max_score": r.points_possible, "status": "passed" if r.status == "passed" else "failed",
             "output": _student_message(r.status, r.message), "visibility": "visible"}
            for r in sub.results
        ],
    }


def write_gradescope_results(gradebook: Gradebook, assignment: Assignment, out_dir: str | Path) -> list[Path]:
    """`<out_dir>/<file name of the submission>/results.json` for each submission."""

    def write(sub: SubmissionResult, name: str) -> Path:
        path = Path(out_dir) / name / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gradescope_results(sub), indent=2) + "\n", encoding="utf-8")
        return path

    return _write_each(with_manual_scores(gradebook, assignment), write)


def _hardest_first(row: dict) -> tuple:
    """Grader errors first (the suite needs fixing), then the lowest pass rate; never-run GPU tests last."""
    ran = sum(row[s] for s in TEST_STATUSES if s not in WAITING_FOR)
    return (-row["error"], ran == 0, row["passed"] / ran if ran else 0.0, row["test_id"])


def write_summary(gradebook: Gradebook, assignment: Assignment, out_dir: str | Path) -> list[Path]:
    """`summary.html` with `scores.png` and `questions.png` in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    subs = with_manual_scores(gradebook, assignment)
    graded = [s for s in subs if s.status == "graded"]
    totals = [s.earned for s in graded]
    per_test: dict[str, Counter] = defaultdict(Counter)
    question_points: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for sub in graded:
        for r in sub.results:
            per_test[r.test_id][r.status] += 1
        for question, (earned, possible) in sub.per_question().items():
            question_points[question][0] += earned
            question_points[question][1] += possible
    tests = sorted(({"test_id": t, **{s: c[s] for s in TEST_STATUSES}} for t, c in per_test.items()),
                   key=_hardest_first)
    stats = {
        "graded": len(graded), "errors": len(subs) - len(graded), "incomplete": sum(s.incomplete for s in graded),
        "grader_errors": sum(row["error"] for row in tests), "ungraded": ungraded(graded),
        **({"mean": statistics.fmean(totals), "median": statistics.median(totals), "min": min(totals),
            "max": max(totals)} if totals else {}),
    }

    fig, ax = plt.subplots(figsize=(7, 3.2))
    out_of = total_possible(assignment)
    ax.hist(totals, bins=min(20, max(1, int(out_of)) + 1), range=(0, out_of), color="#3b6ea5")
    ax.set(xlabel="total points", ylabel="submissions", title=f"{assignment.id}: total points")
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png", dpi=100)
    plt.close(fig)

    names = [q for q, (_, possible) in question_points.items() if possible > 0]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    ax.barh(names, [question_points[q][0] / question_points[q][1] for q in names], color="#3b6ea5")
    ax.set(xlim=(0, 1), xlabel="share of the question's points earned (all submissions)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out_dir / "questions.png", dpi=100)
    plt.close(fig)

    page = out_dir / "summary.html"
    page.write_text(page_template("summary.html").render(assignment=assignment, stats=stats, tests=tests,
                                                         possible=out_of),
                    encoding="utf-8")
    return [page, out_dir / "scores.png", out_dir / "questions.png"]
