"""`autograder similarity`: read everything, compare, write `<assignment>_similarity.html`, `.csv` and `.json`."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autograder.course.config import Assignment
from autograder.exports.formats import page_template, text_cell
from autograder.grading.handins import SubmissionFormatError
from autograder.grading.teams import Handin
from autograder.similarity.compare import DETAILED, FLOOR, Match, Result, compare_all
from autograder.similarity.normalise import OTHER_CODE
from autograder.similarity.sources import Index, graded_names, handin, past_handins, public_files, release_template

BINS = 20  # histogram bars over scores 0..1
TABLE_ROWS = 200  # matches listed per scope on the page; every one is in the CSV and JSON


@dataclass
class Analysis:
    assignment: Assignment
    result: Result
    teams: int
    past: int
    public: int
    not_read: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    indexed: tuple[int, int] = (0, 0)  # documents read now, documents taken from the index


def analyse(assignment: Assignment, handins: dict[str, Handin], past: list[Path], public: list[Path],
            index_path: Path | None) -> Analysis:
    """Everything compared with everything it should be: the cohort pairwise, the cohort one-way against
    the past hand-ins and the public code; the release's own code left out everywhere."""
    began = time.monotonic()
    notebook = f"{assignment.id}.ipynb"
    graded = graded_names(assignment.release_dir / notebook)
    template = release_template(assignment.release_dir, notebook, graded)
    wanted, not_read = [], []
    for sid, given in sorted(handins.items()):
        try:
            wanted.append(handin(given.path, notebook, graded, sid))
        except SubmissionFormatError as exc:
            not_read.append((sid, str(exc)))
    teams = len(wanted)
    old, problems = past_handins(past, notebook, graded)
    known, more = public_files(public)
    index = Index(index_path)
    try:
        read = index.documents(wanted + old + known)
    finally:
        index.close()
    for w, doc in zip(wanted + old + known, read):
        if isinstance(doc, str):
            problems.append((w.name, doc))
    cohort, old_docs, known_docs = (
        [d for d in part if not isinstance(d, str)]
        for part in (read[:teams], read[teams:teams + len(old)], read[teams + len(old):]))
    result = compare_all(cohort, old_docs, known_docs, template)
    return Analysis(assignment, result, len(cohort), len(old_docs), len(known_docs), not_read + problems + more,
                    time.monotonic() - began, (index.read, index.reused))


def write_report(analysis: Analysis, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{analysis.assignment.id}_similarity"
    page, table, data = stem.with_suffix(".html"), stem.with_suffix(".csv"), stem.with_suffix(".json")
    result = analysis.result
    page.write_text(page_template("similarity.html").render(
        a=analysis, assignment=analysis.assignment, result=result, histogram=histogram(result),
        other_code=OTHER_CODE, side_by_side=side_by_side, rows=TABLE_ROWS,
        detailed=DETAILED, floor=FLOOR), encoding="utf-8")
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["scope", "team", "other", "score", "outlier", "similarity", "coverage_team",
                         "coverage_other", "most_similar_function", "shared_rare_lines"])
        for m in result.pairs + result.past + result.public:
            writer.writerow([m.scope, text_cell(m.a), text_cell(m.b), f"{m.score:.4f}", int(m.outlier),
                             f"{m.similarity:.4f}", f"{m.coverage[0]:.4f}",
                             "" if m.coverage[1] is None else f"{m.coverage[1]:.4f}", text_cell(m.best_unit),
                             len(m.rare_lines)])
    data.write_text(json.dumps({
        "assignment": analysis.assignment.id, "teams": analysis.teams, "past": analysis.past,
        "public": analysis.public, "fence": result.fence, "clusters": result.clusters,
        "not_read": [list(x) for x in analysis.not_read],
        "pairs": [_json(m) for m in result.pairs], "past_matches": [_json(m) for m in result.past],
        "public_matches": [_json(m) for m in result.public]}), encoding="utf-8")  # no indent: the C encoder
    return [page, table, data]


def _json(match: Match) -> dict:
    """A match as JSON values (`asdict` copies every field deeply, which thousands of matches feel)."""
    row = {f.name: getattr(match, f.name) for f in fields(match)}
    row["functions"] = [asdict(f) for f in match.functions]
    return row


def histogram(result: Result) -> list[dict]:
    """Bars of the cohort's pair scores; a bar holding an outlier is marked."""
    bars = [{"low": i / BINS, "count": 0, "outliers": 0} for i in range(BINS)]
    for m in result.pairs:
        bar = bars[min(BINS - 1, int(m.score * BINS))]
        bar["count"] += 1
        bar["outliers"] += m.outlier
    return bars


def side_by_side(text: str, marked: list[int]) -> list[tuple[int, str, bool]]:
    """(line number, line, shared?) for each line of a function's code."""
    shared = set(marked)
    return [(i, line, i in shared) for i, line in enumerate(text.splitlines(), start=1)]
