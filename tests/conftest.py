"""Shared fixtures: a throwaway course root (config, source notebook, public checks, hidden suite).

`make_course()` builds a valid course in tmp_path; its keyword arguments replace one part at a time, so
a test states only what it breaks. `cells` builds source cells with the nbgrader metadata that
docs/authoring.md prescribes.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from autograder.course.config import Assignment, load_course
from autograder.course.gradebook import Gradebook, HandinRecord, SubmissionResult, TestResult
from autograder.grading.handins import discover
from autograder.grading.scheduler import grade_batch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ASSIGNMENTS = sorted(p.name for p in (ROOT / "samples").iterdir() if (p / "expected.json").exists())
ASSIGNMENT = "01_demo"

_CONFIG = {
    "COURSE": {"name": "Demo course", "term": "Summer 2027", "timezone": "Europe/Berlin"},
    "DEFAULTS": {
        "tolerances": {
            "fp32": {"rtol": 1e-4, "atol": 1e-5},
            "tf32": {"rtol": 5e-3, "atol": 5e-3},
            "fp16": {"rtol": 5e-3, "atol": 5e-3},
            "bf16": {"rtol": 3e-2, "atol": 3e-2},
        },
        "late_policy": {"percent_per_day": 10, "cap_percent": 50},
        "extraction": "definitions",
        "limits": {"call_timeout_s": 20, "submission_timeout_s": 300, "memory_mb": 4096},
    },
    "ASSIGNMENTS": [{"id": ASSIGNMENT, "title": "Sampling", "due": "2027-04-27 23:59", "points": 3}],
}

PUBLIC_CHECKS = '''import torch
from autograder.student.checks import check, public_check


@public_check("top_k_filter")
def keeps_the_largest(top_k_filter):
    out = top_k_filter(torch.tensor([[1.0, 3.0, 2.0]]), 2)
    assert out.isinf().tolist() == [[True, False, False]]
'''

HIDDEN_SUITE = '''import pytest
import torch

pytestmark = pytest.mark.question("top_k_filter")


@pytest.mark.points(1)
def test_top_k_on_random_logits(submission):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert submission.top_k_filter(logits, 5).isfinite().sum(-1).tolist() == [5, 5, 5, 5]
'''

SOLUTION_LINE = "kth = torch.topk(logits, k, dim=-1).values[..., -1:]"
# A submission's code that passes HIDDEN_SUITE.
CORRECT = (
    "import torch\n"
    "def top_k_filter(logits, k):\n"
    "    kth = torch.topk(logits, k, dim=-1).values[..., -1:]\n"
    "    return logits.masked_fill(logits < kth, float('-inf'))\n"
)
HIDDEN_TEST_LINE = "assert top_k_filter(torch.eye(3), 1).isinf().sum() == 6"
QUESTION = "**Reflection.** How do top-k and top-p differ in the candidates they keep?"
MODEL_ANSWER = "Top-k keeps a fixed number of candidates, top-p adapts to the shape of the distribution."
LIMITS_QUESTION = "**Reflection.** What does top-p need that top-k does not?"


class Cells:
    """Builders for source cells; metadata exactly as nbgrader's Create Assignment toolbar writes it."""

    @staticmethod
    def _nbgrader(cell, grade_id: str, *, solution: bool, grade: bool, locked: bool, points=None):
        meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": locked, "schema_version": 3}
        if points is not None:
            meta["points"] = points
        cell.metadata["nbgrader"] = meta
        return cell

    @classmethod
    def answer(cls, grade_id: str, source: str):
        return cls._nbgrader(nbformat.v4.new_code_cell(source), grade_id, solution=True, grade=False, locked=False)

    @classmethod
    def test(cls, grade_id: str, source: str, points: float = 1):
        return cls._nbgrader(nbformat.v4.new_code_cell(source), grade_id, solution=False, grade=True, locked=True,
                             points=points)

    @classmethod
    def reflection(cls, grade_id: str, text: str, points: float = 2):
        return cls._nbgrader(nbformat.v4.new_markdown_cell(text), grade_id, solution=True, grade=True, locked=False,
                             points=points)

    @classmethod
    def readonly(cls, grade_id: str, source: str):
        return cls._nbgrader(nbformat.v4.new_code_cell(source), grade_id, solution=False, grade=False, locked=True)

    code = staticmethod(nbformat.v4.new_code_cell)
    markdown = staticmethod(nbformat.v4.new_markdown_cell)


def demo_cells() -> list:
    """A small source notebook: given code, one answer with outputs, one test with hidden tests, one reflection."""
    answer = Cells.answer(
        "top_k_filter",
        "def top_k_filter(logits, k):\n"
        '    """Keep the k largest logits per row."""\n'
        "    ### BEGIN SOLUTION\n"
        f"    {SOLUTION_LINE}\n"
        '    return logits.masked_fill(logits < kth, float("-inf"))\n'
        "    ### END SOLUTION",
    )
    answer.execution_count = 3
    answer.outputs = [nbformat.v4.new_output("stream", text="ran the solution\n")]
    return [
        Cells.markdown("# Sampling\nImplement the filters below."),
        Cells.readonly("setup", "import torch\nfrom public_checks import check"),
        answer,
        Cells.test(
            "check_top_k_filter",
            f'check("top_k_filter")\n### BEGIN HIDDEN TESTS\n{HIDDEN_TEST_LINE}\n### END HIDDEN TESTS',
        ),
        Cells.markdown(QUESTION),  # the release replaces the answer cell's text: the question stands above it
        Cells.reflection("reflection_sampling", MODEL_ANSWER),
    ]


def write_notebook(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def render_config(config: dict) -> str:
    return "".join(f"{name} = {value!r}\n" for name, value in config.items())


def write_course(root: Path, source_code: str, grader_tests: dict[str, str], *, points: float, **limits) -> Path:
    """A minimal course whose source notebook is one code cell; `limits` override the defaults."""
    config = copy.deepcopy(_CONFIG)
    config["DEFAULTS"]["limits"].update(limits)
    config["ASSIGNMENTS"][0]["points"] = points
    (root / "course_config.py").write_text(render_config(config))
    write_notebook(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", [nbformat.v4.new_code_cell(source_code)])
    for rel, text in grader_tests.items():
        (root / "grader_tests" / ASSIGNMENT / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "grader_tests" / ASSIGNMENT / rel).write_text(text)
    return root


def student_session(root: Path, notebook: Path, **limits):
    """A grading session of the minimal course at `root` for `notebook`; `limits` override the course's."""
    import dataclasses

    from autograder.grading.extraction import extract
    from autograder.grading.oracle import GradingSession

    assignment = load_course(root).get(ASSIGNMENT)
    if limits:
        assignment = dataclasses.replace(assignment, limits=dataclasses.replace(assignment.limits, **limits))
    return GradingSession(assignment, extract(notebook))


def call(session, name, *args, forbidden=()):
    """Call the notebook's `name` in the session's sandbox, as a test marked `forbidden(*forbidden)` would."""
    session.forbidden_now = tuple(forbidden)
    return session.request(name, "call", name, args=args)


@pytest.fixture
def cells() -> type[Cells]:
    return Cells


@pytest.fixture
def course_config() -> dict:
    """A fresh, valid config dict (COURSE, DEFAULTS, ASSIGNMENTS) for a test to break."""
    return copy.deepcopy(_CONFIG)


@pytest.fixture
def make_course(tmp_path, course_config):
    """Build a course root; `cells` for the source notebook, `config` as dict or raw Python text,
    `files` (extra source files) and `grader_tests` as {relative path: str or bytes}."""

    def make(cells: list | None = None, *, config: dict | str | None = None,
             files: dict | None = None, grader_tests: dict | None = None) -> Path:
        root = tmp_path / "course"
        config = course_config if config is None else config
        (root / "course_config.py").parent.mkdir(parents=True, exist_ok=True)
        (root / "course_config.py").write_text(config if isinstance(config, str) else render_config(config))
        write_notebook(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", demo_cells() if cells is None else cells)
        defaults = {"public_checks.py": PUBLIC_CHECKS, "data/weights.bin": bytes(range(256))}
        for folder, content in ((f"source/{ASSIGNMENT}", defaults | (files or {})),
                                (f"grader_tests/{ASSIGNMENT}", grader_tests or {"test_top_k.py": HIDDEN_SUITE})):
            for rel, data in content.items():
                path = root / folder / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return root

    return make


@pytest.fixture
def assignment(make_course):
    """The demo assignment of a freshly built course."""
    return load_course(make_course()).get(ASSIGNMENT)


@dataclasses.dataclass(frozen=True)
class SampleBatch:
    """The bundled samples of one assignment, graded as one batch, and what a rerun of that batch did."""

    assignment: Assignment
    samples: dict
    gradebook: Path
    graded_ids: list[str]
    skipped: list[str]
    failures: dict
    results: dict[str, SubmissionResult]
    expected: dict
    rerun: tuple


@pytest.fixture(scope="session", params=SAMPLE_ASSIGNMENTS)
def sample_batch(request, tmp_path_factory) -> SampleBatch:
    """Grading is the slow part: each assignment's samples are graded once per test run, and the
    score, leak and browser tests all read that gradebook."""
    assignment = load_course(ROOT).get(request.param)
    samples = discover([ROOT / "samples" / assignment.id]).handins
    db = tmp_path_factory.mktemp("gradebook") / "gradebook.db"
    with Gradebook.open(db) as gradebook:
        graded_ids, skipped, failures = grade_batch(assignment, samples, gradebook)
        results = {r.submission_id: r for r in gradebook.submissions(assignment.id)}
        rerun = grade_batch(assignment, samples, gradebook)
    expected = json.loads((ROOT / "samples" / assignment.id / "expected.json").read_text())
    return SampleBatch(assignment, samples, db, graded_ids, skipped, failures, results, expected, rerun)


@dataclasses.dataclass(frozen=True)
class ExportedPages:
    feedback: list[Path]
    summary: Path


@pytest.fixture(scope="session")
def sample_pages(sample_batch, tmp_path_factory) -> ExportedPages:
    """The feedback pages and the instructor summary of `sample_batch`, written by the `export` command."""
    from autograder.cli import main

    out = tmp_path_factory.mktemp(f"pages-{sample_batch.assignment.id}")
    for fmt in ("html", "summary"):
        argv = ["--course-root", str(ROOT), "export", sample_batch.assignment.id, "--gradebook",
                str(sample_batch.gradebook), "--format", fmt, "--output", str(out / fmt)]
        assert main(argv) == 0, argv
    return ExportedPages(sorted((out / "html").glob("*.html")), out / "summary" / "summary.html")


# --- a real browser, for every page a person reads (Debian's chromium, driven by Playwright) ---

LAPTOP, PHONE = 1280, 400  # window widths in CSS pixels; the phone held upright


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the whole session (Playwright's sync API allows one per thread)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH: `make test` installs Debian's package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture
def tab(browser):
    """One browser tab, and every problem it reported (console errors, script errors, failed loads)."""
    page = browser.new_page(viewport={"width": LAPTOP, "height": 900})
    problems = []
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("requestfailed", lambda request: problems.append(f"not loaded: {request.url}"))
    yield page, problems
    page.close()


HOSTILE_ID = '<img src=x onerror="window.pwned=1">team'
HOSTILE_FOLDER = '<svg onload="window.pwned=1">'
SCRIPT = '<script>window.pwned=1</script>'


@dataclasses.dataclass(frozen=True)
class Workspace:
    """A course with two reflections, three graded teams (one hostile) and their notebooks on disk."""

    course: object
    gradebook: Path
    tokens: dict[str, str]  # grader name -> token: "prof" (instructor), "ta1", "ta2"
    ids: list[str]


def handin_notebook(folder: Path, answer: str, *, hostile: bool = False) -> Path:
    """A hand-in: the demo notebook with the student's reflection answers; a hostile one carries script and HTML
    in its markdown, its outputs and its answers."""
    cells = demo_cells()
    cells[-1].source = answer
    cells += [Cells.markdown(LIMITS_QUESTION), Cells.reflection("reflection_limits", answer + " (limits)", points=1)]
    if hostile:
        cells.insert(0, Cells.markdown(f"# Hi {SCRIPT}<iframe src=\"https://example.org\"></iframe>"))
        cells[3].outputs = [nbformat.v4.new_output("display_data", data={"text/html": SCRIPT, "text/plain": SCRIPT}),
                            nbformat.v4.new_output("stream", text="<b onmouseover=alert(1)>out</b>")]
    return write_notebook(folder / (f"{HOSTILE_FOLDER}.ipynb" if hostile else f"{ASSIGNMENT}.ipynb"), cells)


@pytest.fixture
def workspace(make_course, tmp_path) -> Workspace:
    root = make_course(demo_cells() + [Cells.markdown(LIMITS_QUESTION),
                                       Cells.reflection("reflection_limits", "Top-p needs a sorted vocabulary.", points=1)])
    course = load_course(root)
    db = tmp_path / "gradebook.db"
    ids = ["team01", "team02", HOSTILE_ID]
    with Gradebook.open(db) as gb:
        for n, sid in enumerate(ids):
            hostile = sid == HOSTILE_ID
            folder = handin_notebook(tmp_path / "handins" / (HOSTILE_FOLDER if hostile else sid),
                                     SCRIPT + " answer" if hostile else f"answer of {sid}", hostile=hostile).parent
            passed = n != 1
            gb.record(SubmissionResult(
                ASSIGNMENT, sid, str(folder), "nb", "suite", "0.1.0", "cpu", "graded", "",
                [TestResult("test_top_k.py::test_top_k_on_random_logits", "top_k_filter",
                            "passed" if passed else "failed", 1.0 if passed else 0.0, 1.0,
                            "" if passed else f"wrong {SCRIPT}", 0.1)],
                graded_at=datetime.datetime(2027, 4, 28, tzinfo=datetime.timezone.utc)))
            gb.record_handin(ASSIGNMENT, HandinRecord(sid, sid, (), None, f"online text: {SCRIPT}" if hostile else ""))
        tokens = {"prof": gb.add_grader("prof", instructor=True), "ta1": gb.add_grader("ta1"),
                  "ta2": gb.add_grader("ta2")}
    return Workspace(course, db, tokens, ids)
