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
import torch

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


@pytest.fixture
def gpu_stood_in_by(monkeypatch):
    """Run the CUDA checks here, with another device in the GPU's place."""
    def stand_in(device: str) -> None:
        monkeypatch.setattr(checks, "GPU", device)
        monkeypatch.setattr(checks, "gpu_present", lambda: True)
    return stand_in


def test_every_task_has_a_gpu_check_and_the_solution_passes_it(assignment, gpu_stood_in_by):
    gpu_stood_in_by("cpu")
    namespace = _namespace(assignment.source_dir / f"{assignment.id}.ipynb")
    for task, registered in checks.REGISTERED.items():
        cuda = [fn for fn in registered if fn in checks.CUDA_CHECKS]
        assert cuda, f"{task} has no public check on the GPU"
        failed = [(name, msg) for name, ok, msg in checks.run_checks(task, namespace) if not ok]
        assert failed == [], task


def test_without_a_gpu_the_gpu_checks_are_named_not_run(assignment, monkeypatch):
    monkeypatch.setattr(checks, "gpu_present", lambda: False)
    namespace = _namespace(assignment.source_dir / f"{assignment.id}.ipynb")
    task = sorted(checks.REGISTERED)[0]
    cpu_only = [fn for fn in checks.REGISTERED[task] if fn not in checks.CUDA_CHECKS]
    assert len(checks.run_checks(task, namespace)) == len(cpu_only)
    with redirect_stdout(io.StringIO()) as printed:
        namespace["check"] = checks.check
        exec(f"check({task!r})", namespace)
    assert f"{task}: {len(cpu_only)}/{len(cpu_only)} public checks passed (" in printed.getvalue()
    assert "on a GPU, where one is present)" in printed.getvalue()


def test_a_result_left_on_the_cpu_for_gpu_inputs_fails_with_the_device_named(gpu_stood_in_by):
    gpu_stood_in_by("meta")  # a device whose tensors hold no values: the device is all that can be compared

    def mask_ignoring_device(seq_len, device=None):
        return torch.ones(seq_len, seq_len, dtype=torch.bool).tril()

    with pytest.raises(AssertionError, match=r"causal_mask\(4, device=...\) on meta inputs \(results belong on the "
                                             r"input's device\): on device cpu but expected meta"):
        checks.same_on_gpu(mask_ignoring_device, 4, device=torch.device("cpu"), what="causal_mask(4, device=...)")
    layer = torch.nn.Linear(2, 2)
    moved = checks.to_gpu({"w": layer, "n": [3, "x"]})
    assert moved["w"].weight.device.type == "meta" and moved["n"] == [3, "x"]
    assert layer.weight.device.type == "cpu", "the caller's module is copied, not moved"


def test_a_generator_becomes_a_fresh_one_on_the_gpu_with_its_seed(gpu_stood_in_by):
    gpu_stood_in_by("cpu")
    seeded = torch.Generator().manual_seed(7)
    moved = checks.to_gpu(seeded)
    assert moved is not seeded and moved.initial_seed() == 7
    assert torch.equal(torch.rand(3, generator=moved), torch.rand(3, generator=torch.Generator().manual_seed(7)))
