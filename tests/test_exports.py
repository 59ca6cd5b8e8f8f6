import csv
import dataclasses
import datetime as dt
import html
import io
import json
import re
import zoneinfo
from pathlib import Path

import pytest

from autograder.course.config import Assignment, LatePolicy, Limits, Tolerance
from autograder.exports.grades import (
    MAX_NAME_BYTES, ExportError, check_title, export_csv, file_names, write_feedback_pages, write_gradescope_results,
    write_summary,
)
from autograder.course.gradebook import Gradebook, SubmissionResult, TestResult

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
    root=Path(__file__).parent / "no_such_course",  # no source notebook, so no hand-graded cells
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


@pytest.fixture
def messages_gradebook(gradebook):
    """team05: a failure whose message holds markup, and a grader error with internal detail."""
    results = [
        TestResult("test_tokenize.py::test_splits_words[fp16]", "tokenize", "failed", 0.0, 1.0,
                   "expected <unk> & got <script>alert(1)</script>", 0.1),
        TestResult("test_generate.py::test_greedy", "generate", "error", 0.0, 3.0,
                   "grader error in this test (NameError: name 'reference_top_k' is not defined)", 0.1),
        TestResult("test_generate.py::test_sampling", "generate", "passed", 1.0, 1.0, "", 0.1),
    ]
    gradebook.record(dataclasses.replace(graded("team05", []), results=results, load_messages="cell 3: syntax error"))
    return gradebook


def test_check_titles_hide_the_test_module_and_keep_parameters():
    assert check_title("test_top_k.py::test_keeps_the_k_largest[fp16]") == "keeps the k largest [fp16]"
    assert check_title("test_top_k.py::test_ties") == "ties"


def test_feedback_pages_escape_messages_and_hide_grader_internals(messages_gradebook, tmp_path):
    pages = write_feedback_pages(messages_gradebook, ASSIGNMENT, tmp_path / "feedback")
    assert sorted(p.name for p in pages) == ["team01.html", "team02.html", "team03.html", "team04.html", "team05.html"]
    page = (tmp_path / "feedback" / "team05.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "reference_top_k" not in page and "the grader could not run this check" in page
    assert "splits words [fp16]" in page and "1 of 5 points" in page and "cell 3: syntax error" in page


def test_feedback_pages_say_why_a_grade_is_partial_late_or_missing(gradebook, tmp_path):
    write_feedback_pages(gradebook, ASSIGNMENT, tmp_path)
    assert "need a GPU runner" in (tmp_path / "team03.html").read_text()
    assert "20% deducted" in (tmp_path / "team02.html").read_text()
    assert "could not be graded: the notebook is not valid JSON" in (tmp_path / "team04.html").read_text()


def test_gradescope_results_per_submission(messages_gradebook, tmp_path):
    write_gradescope_results(messages_gradebook, ASSIGNMENT, tmp_path)
    team05 = json.loads((tmp_path / "team05" / "results.json").read_text())
    assert team05["score"] == 1.0
    assert [(t["name"], t["number"], t["status"], t["score"], t["max_score"]) for t in team05["tests"]] == [
        ("splits words [fp16]", "tokenize", "failed", 0.0, 1.0),
        ("greedy", "generate", "failed", 0.0, 3.0),
        ("sampling", "generate", "passed", 1.0, 1.0),
    ]
    assert "reference_top_k" not in json.dumps(team05)
    team04 = json.loads((tmp_path / "team04" / "results.json").read_text())
    assert team04 == {"score": 0, "output": "Your notebook could not be graded: the notebook is not valid JSON",
                      "tests": []}


def test_summary_orders_tests_hardest_first_and_flags_grader_errors(messages_gradebook, tmp_path):
    written = write_summary(messages_gradebook, ASSIGNMENT, tmp_path)
    assert sorted(p.name for p in written) == ["questions.png", "scores.png", "summary.html"]
    assert all(p.stat().st_size > 1000 for p in written)
    page = (tmp_path / "summary.html").read_text()
    assert "4 submissions graded" in page and "1 could not be read" in page and "1 incomplete" in page
    assert "1 test results are grader errors" in page
    order = [page.index(t) for t in ("test_generate.py::test_greedy",  # a grader error
                                     "test_tokenize.py::test_splits_words[fp16]",  # never passed
                                     "test_tokenize.py::test_1",  # passed 1 of 2
                                     "test_tokenize.py::test_0")]  # always passed
    assert order == sorted(order)


# --- ids that come from any folder name -----------------------------------------------------------


def test_file_names_are_safe_short_and_unique_whatever_the_id():
    ids = ["team01", "Team01", "x" * 255, "a b", "a_b", "../../etc/passwd", "..", "caf\\xe9", "team/7", "tëam", ""]
    names = file_names(ids)
    assert (names["Team01"], names["a_b"], names["tëam"]) == ("Team01", "a_b", "tëam")  # already safe: kept
    assert names["team01"].startswith("team01-") and names["a b"].startswith("a_b-")  # taken where case does not count
    assert names["../../etc/passwd"].startswith("_.._etc_passwd-") and names[".."].startswith("submission-")
    assert len(set(n.casefold() for n in names.values())) == len(ids)
    assert all(re.fullmatch(r"[\w-][\w.-]*", n) and len(n.encode()) <= MAX_NAME_BYTES for n in names.values())
    assert file_names(reversed(ids)) == names  # the same id gets the same name in every export


def test_a_255_byte_id_and_odd_ids_get_a_page_each(tmp_path):
    ids = ["é" * 127, "team 1/2", "[bold]team[/bold]", "team\\udcff"]
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        for sid in ids:
            gb.record(graded(sid, [("tokenize", "passed", 1)]))
        pages = write_feedback_pages(gb, ASSIGNMENT, tmp_path / "feedback")
        results = write_gradescope_results(gb, ASSIGNMENT, tmp_path / "gradescope")
    assert len(pages) == len(results) == len(ids) == len(set(pages))
    assert all(p.parent == tmp_path / "feedback" for p in pages)
    shown = {sid: any(f"Submission <strong>{html.escape(sid)}</strong>" in p.read_text() for p in pages) for sid in ids}
    assert all(shown.values()), shown


def test_one_page_that_cannot_be_written_does_not_stop_the_others(gradebook, tmp_path):
    (tmp_path / "team02.html").mkdir()  # team02's page cannot be written there
    with pytest.raises(ExportError) as info:
        write_feedback_pages(gradebook, ASSIGNMENT, tmp_path)
    assert str(info.value).startswith("wrote 3 files, but 1 could not be written:\n  team02: IsADirectoryError")
    assert sorted(p.name for p in tmp_path.glob("*.html") if p.is_file()) == ["team01.html", "team03.html", "team04.html"]


@pytest.mark.parametrize("sid", ["=HYPERLINK(\"http://x\")", "+1", "-1+2", "@SUM(A1)", "\tx", "\r=1"])
def test_ids_a_spreadsheet_would_evaluate_are_exported_as_text(tmp_path, sid):
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(graded(sid, [("tokenize", "passed", 1)]))
        out = io.StringIO()
        export_csv(gb, ASSIGNMENT, out)
    row = list(csv.reader(io.StringIO(out.getvalue())))[1]
    assert row[0] == "'" + sid and row[1:3] == ["1", "1"]


def test_overrides_and_regrade_outcomes_count_in_every_export_and_survive_a_regrade(gradebook, tmp_path):
    from autograder.exports.moodle import comment_for
    from autograder.exports.manual import with_manual_scores

    failed = "test_tokenize.py::test_1"  # team02's failed check, 1 point
    gradebook.set_override("01_intro", "team02", failed, 1.0, "the suite's fixture was wrong", "prof")
    regrade = gradebook.record_regrade("01_intro", "team02", failed, "our tokenizer is right", "prof")
    gradebook.resolve_regrade("01_intro", regrade, "accepted: full points", "prof")
    gradebook.set_override("01_intro", "team03", "test_generate.py::test_1", 2.0, "ran it on a GPU by hand", "prof")
    gradebook.record(graded("team02", [("tokenize", "passed", 1), ("tokenize", "failed", 1),
                                       ("generate", "passed", 3)]))  # regraded: the override stays apart
    out = io.StringIO()
    export_csv(gradebook, ASSIGNMENT, out)
    rows = {r[0]: r for r in csv.reader(io.StringIO(out.getvalue()))}
    assert rows["team02"][1:4] == ["2", "3", "5"] and rows["team02"][-1] == "graded"
    assert rows["team03"][2:4] == ["2", "4"] and rows["team03"][-1] == "graded"  # no longer waits for a GPU
    pages = {p.stem: p.read_text() for p in write_feedback_pages(gradebook, ASSIGNMENT, tmp_path / "html")}
    assert "points set by the course staff: 1 of 1 (the suite&#39;s fixture was wrong)" in pages["team02"]
    assert "regrade requested: our tokenizer is right -&gt; accepted: full points" in pages["team02"]
    write_gradescope_results(gradebook, ASSIGNMENT, tmp_path / "gs")
    assert json.loads((tmp_path / "gs" / "team02" / "results.json").read_text())["score"] == 5
    sub = {s.submission_id: s for s in with_manual_scores(gradebook, ASSIGNMENT)}["team02"]
    comment = comment_for(sub, ASSIGNMENT, gradebook.regrades("01_intro"))
    assert "Regrade request on 1: accepted: full points" in comment and "Total: 5 of 5 points" in comment
    gradebook.set_override("01_intro", "team02", failed, None, "", "prof")  # taken back: the verdict counts again
    out = io.StringIO()
    export_csv(gradebook, ASSIGNMENT, out)
    assert [r for r in csv.reader(io.StringIO(out.getvalue())) if r[0] == "team02"][0][3] == "4"
