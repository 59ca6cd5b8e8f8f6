"""The public checks students run in their notebooks: they pass on the solution, and on the unsolved
release they say "not implemented yet" instead of a traceback.

The notebook's definitions are loaded the way grading extracts them, so hub-loading experiment cells
do not run; the checks run in this process, as they do in a student's kernel.
"""

from __future__ import annotations

import ast
import importlib.util
import io
from collections import defaultdict
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from autograder.student import checks
from autograder.course.config import load_course
from autograder.grading.extraction import extract
from autograder.grading.sandbox import load_statements

ROOT = Path(__file__).resolve().parents[1]
COURSE = load_course(ROOT)


def _namespace(notebook: Path) -> dict:
    """The notebook's definitions, loaded as grading loads them (a failing import is only a warning)."""
    namespace: dict = {"__name__": "__notebook__"}
    load_statements(extract(notebook), namespace)
    return namespace


def _tasks_checked_in(notebook: Path) -> list[str]:
    tasks = []
    for source in _test_cells(notebook):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check":
                tasks.append(node.args[0].value)
    return tasks


def _test_cells(notebook: Path):
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            yield cell.source


@pytest.fixture(params=sorted(COURSE.assignments))
def assignment(request, monkeypatch):
    monkeypatch.setattr(checks, "REGISTERED", defaultdict(list))
    a = COURSE.get(request.param)
    spec = importlib.util.spec_from_file_location(f"public_checks_{a.id}", a.source_dir / "public_checks.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return a


def test_every_task_the_notebook_checks_has_public_checks(assignment):
    tasks = _tasks_checked_in(assignment.source_dir / f"{assignment.id}.ipynb")
    assert tasks, "the notebook calls check(...) nowhere"
    assert sorted(set(tasks)) == sorted(checks.REGISTERED)


def test_the_solution_passes_every_public_check(assignment):
    namespace = _namespace(assignment.source_dir / f"{assignment.id}.ipynb")
    for task in checks.REGISTERED:
        failed = [(name, msg) for name, ok, msg in checks.run_checks(task, namespace) if not ok]
        assert failed == [], task


def test_the_unsolved_release_is_told_what_to_do(assignment):
    namespace = _namespace(assignment.release_dir / f"{assignment.id}.ipynb")
    for task in checks.REGISTERED:
        with redirect_stdout(io.StringIO()) as printed:
            namespace["check"] = checks.check
            exec(f"check({task!r})", namespace)
        report = printed.getvalue()
        assert report.startswith(f"{task}: 0/") and "not implemented yet" in report and "Traceback" not in report
