"""Hand-graded cells (reflections): sheets for the graders, their points back into the gradebook.

A reflection is an nbgrader "manually graded answer": a markdown cell with `grade` and `solution`
set and its points. `export --format manual` writes, per submission, each answer next to the model
answer of the source notebook (HTML for reading) and one CSV to fill in; `import-manual` checks the
whole CSV before it records anything. Scores live in their own gradebook table, so a regrade of the
autograded part never loses them, and every export shows them as checks of their own
(`with_manual_scores`): graded, or still waiting for a grader (the grade is then incomplete).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import getpass
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from autograder.course.config import Assignment
from autograder.course.gradebook import Gradebook, ManualScore, Override, SubmissionResult, TestResult
from autograder.exports.formats import page_template, text_cell
from autograder.grading.handins import SubmissionFormatError, find_notebook, notebook_file

MANUAL_PREFIX = "manual::"
SHEET_COLUMNS = ["submission", "grade_id", "points_possible", "points", "comment", "grader"]


class ManualError(Exception):
    """A manual-score sheet that cannot be imported; nothing was recorded."""


@dataclass(frozen=True)
class ManualCell:
    grade_id: str
    points: float
    question: str  # the markdown just above the answer cell
    model_answer: str


def manual_cells(assignment: Assignment) -> list[ManualCell]:
    """The hand-graded cells of the assignment's source notebook, in notebook order (read once per
    version of the notebook: every export row and total asks)."""
    return list(_cells_of(tuple((path, path.stat().st_mtime_ns) for path in assignment.source_notebooks())))


@functools.lru_cache(maxsize=16)
def _cells_of(versions: tuple[tuple[Path, int], ...]) -> tuple[ManualCell, ...]:
    import nbformat  # seconds to import: only the exports that show reflections pay for it

    cells = []
    for path, _ in versions:
        nb = nbformat.read(path, as_version=4)
        previous = ""
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
                cells.append(ManualCell(meta["grade_id"], float(meta.get("points", 0)), previous, cell.source))
            previous = cell.source if cell.cell_type == "markdown" else ""
    return tuple(cells)


def with_manual_scores(gradebook: Gradebook, assignment: Assignment) -> list[SubmissionResult]:
    """The submissions of `assignment` as every export counts them: one check per hand-graded cell (its
    recorded points, or "needs-grading", worth its points, earned 0, until a grader gives them), the
    instructor's overrides of automatic checks in place of their verdicts, and each regrade request with
    its outcome in the message of the check it concerns. All are kept apart from the grade, so a regrade
    of the notebook keeps them."""
    cells = manual_cells(assignment)
    scores = gradebook.manual_scores(assignment.id)
    overrides = gradebook.overrides(assignment.id)
    regrades = defaultdict(list)
    for regrade in gradebook.regrades(assignment.id):
        regrades[regrade.submission_id, regrade.test_id].append(regrade)
    subs = gradebook.submissions(assignment.id)
    for sub in subs:
        if sub.status != "graded":
            continue
        given, changed = scores.get(sub.submission_id, {}), overrides.get(sub.submission_id, {})
        results = [_overridden(r, changed.get(r.test_id)) for r in sub.results]
        results += [_check(cell, given.get(cell.grade_id)) for cell in cells]
        sub.results = [_with_regrades(r, regrades.get((sub.submission_id, r.test_id), ())) for r in results]
    return subs


def _overridden(result: TestResult, override: Override | None) -> TestResult:
    """A check whose points the instructor set: a person's verdict now (so no longer waiting for a GPU)."""
    if override is None:
        return result
    points = min(max(override.points, 0.0), result.points_possible)
    said = result.status + (f": {result.message}" if result.message and result.status != "error" else "")
    return dataclasses.replace(result, status="graded-by-hand", points_earned=points, message=(
        f"points set by the course staff: {points:g} of {result.points_possible:g} ({override.reason}); "
        f"the automatic check said {said}"))


def _with_regrades(result: TestResult, regrades) -> TestResult:
    if not regrades:
        return result
    notes = [f"regrade requested: {r.request} -> {r.outcome or 'pending'}" for r in regrades]
    return dataclasses.replace(result, message="\n".join([result.message, *notes]) if result.message else
                               "\n".join(notes))


def _check(cell: ManualCell, score: ManualScore | None) -> TestResult:
    test_id = f"{MANUAL_PREFIX}{cell.grade_id}"
    if score is None:
        return TestResult(test_id, cell.grade_id, "needs-grading", 0.0, cell.points,
                          "not graded yet: a course staff member reads this answer", 0.0)
    comment = f"graded by hand: {score.points:g} of {cell.points:g}" + (f"; {score.comment}" if score.comment else "")
    return TestResult(test_id, cell.grade_id, "graded-by-hand", min(score.points, cell.points), cell.points, comment,
                      0.0)


def submitted_cells(sub: SubmissionResult, assignment: Assignment) -> list:
    """The cells of the submission's notebook as grading read them (encodings, old formats); a notebook that
    cannot be read again (moved, deleted, broken) raises `SubmissionFormatError` saying why."""
    from autograder.grading.extraction import read_cells  # nbformat: seconds to import, for these pages only

    name = f"{assignment.id}.ipynb"
    with notebook_file(find_notebook(Path(sub.path), name), name) as notebook:
        return read_cells(notebook)


def answers(sub: SubmissionResult, assignment: Assignment) -> dict[str, str]:
    """grade id -> the text of the submission's answer cell; a notebook that cannot be read again (moved,
    deleted) gives a message in place of each answer."""
    try:
        cells = submitted_cells(sub, assignment)
    except SubmissionFormatError as exc:
        return {"": f"(the hand-in at {sub.path} cannot be read any more: {exc})"}
    found_answers = {}
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
        if isinstance(meta, dict) and meta.get("grade_id"):
            found_answers[str(meta["grade_id"])] = cell_text(cell.get("source", ""))
    return found_answers


def cell_text(source) -> str:
    """A notebook's text field, saved as one string or as a list of lines."""
    return "".join(map(str, source)) if isinstance(source, list) else str(source)


def write_sheets(gradebook: Gradebook, assignment: Assignment, out_dir: Path) -> list[Path]:
    """`<out_dir>/<assignment>_manual.html` (answers next to model answers) and `<assignment>_manual.csv`
    (one row per submission and cell; points already given are filled in)."""

    cells = manual_cells(assignment)
    scores = gradebook.manual_scores(assignment.id)
    records = gradebook.handins(assignment.id)  # notes the TA reads beside the answers (online text)
    subs = [s for s in gradebook.submissions(assignment.id) if s.status == "graded"]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, teams = [], []
    for sub in subs:
        found = answers(sub, assignment)
        given = scores.get(sub.submission_id, {})
        record = records.get(sub.submission_id)
        teams.append({"id": sub.submission_id, "notes": [n for n in (record.notes if record else "").split("\n") if n],
                      "answers": [
            {"cell": c, "answer": found.get(c.grade_id, found.get("", "(no answer cell with this grade id: its "
                                                                        "metadata was removed or the cell deleted)")),
             "score": given.get(c.grade_id)} for c in cells]})
        for c in cells:
            score = given.get(c.grade_id)
            rows.append([text_cell(sub.submission_id), c.grade_id, f"{c.points:g}",
                         "" if score is None else f"{score.points:g}", "" if score is None else score.comment,
                         "" if score is None else score.grader])
    sheet = out_dir / f"{assignment.id}_manual.csv"
    with sheet.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(SHEET_COLUMNS)
        writer.writerows(rows)
    page = out_dir / f"{assignment.id}_manual.html"
    page.write_text(page_template("manual.html").render(assignment=assignment, cells=cells, teams=teams),
                    encoding="utf-8")
    return [page, sheet]


def import_sheet(gradebook: Gradebook, assignment: Assignment, sheet: Path, grader: str | None = None) -> int:
    """Record the points of a filled-in sheet; every row is checked first and any problem refuses the
    whole file with one message. Rows without points are not graded yet and are left alone. Returns the
    number of scores recorded."""
    try:
        text = sheet.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManualError(f"{sheet}: cannot be read ({exc}); nothing was recorded") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = {"submission", "grade_id", "points"} - set(reader.fieldnames or ())
    if missing:
        raise ManualError(f"{sheet}: missing column(s) {', '.join(sorted(missing))} (a sheet written by "
                          f"`autograder export {assignment.id} --format manual` has them); nothing was recorded")
    cells = {c.grade_id: c for c in manual_cells(assignment)}
    known = {s.submission_id for s in gradebook.submissions(assignment.id)}
    now = dt.datetime.now(dt.timezone.utc)
    default_grader = grader or getpass.getuser()
    scores, problems, seen = [], [], set()
    for line, row in enumerate(reader, start=2):
        sid, grade_id, points = (row.get(k) or "" for k in ("submission", "grade_id", "points"))
        if sid.startswith("'") and sid not in known and sid[1:] in known:
            sid = sid[1:]  # the export's guard against spreadsheet formulas
        if not points.strip():
            continue
        where = f"line {line} ({sid}, {grade_id})"
        if sid not in known:
            problems.append(f"{where}: no submission {sid!r} in the gradebook")
        elif grade_id not in cells:
            problems.append(f"{where}: {assignment.id} has no hand-graded cell {grade_id!r} "
                            f"(cells: {', '.join(cells) or 'none'})")
        elif (sid, grade_id) in seen:
            problems.append(f"{where}: a second row for the same cell")
        else:
            value = spreadsheet_number(points)
            possible = cells[grade_id].points
            if value is None:
                problems.append(f"{where}: {points!r} is not a number of points")
            elif not 0 <= value <= possible:
                problems.append(f"{where}: {value:g} points is outside 0..{possible:g}")
            else:
                seen.add((sid, grade_id))
                scores.append(ManualScore(sid, grade_id, value, possible, (row.get("comment") or "").strip(),
                                          (row.get("grader") or "").strip() or default_grader, now))
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ManualError(f"{sheet}: {len(problems)} problem(s); nothing was recorded:\n  {shown}")
    gradebook.record_manual(assignment.id, scores)
    return len(scores)


def spreadsheet_number(text: str) -> float | None:
    """A number as a spreadsheet writes it (1.5, or 1,5 in German), or None for anything else."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def ungraded(subs: list[SubmissionResult]) -> dict[str, int]:
    """grade id -> how many graded submissions still wait for a grader on that cell."""
    counts: dict[str, int] = {}
    for sub in subs:
        for r in sub.results:
            if r.status == "needs-grading":
                counts[r.question] = counts.get(r.question, 0) + 1
    return counts

