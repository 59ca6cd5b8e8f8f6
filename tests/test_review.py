"""Code a TA should read by hand: each kind of reach into the interpreter is named with its cell and line
(however it is spelled), ordinary graded code never is, and the flag reaches the TA's score table."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest

from autograder.cli import main
from autograder.grading.extraction import extract
from autograder.grading.review import REVIEW, review_notes
from conftest import ASSIGNMENT, CORRECT, write_notebook

ROOT = Path(__file__).resolve().parents[1]


def notes_of(tmp_path: Path, *cells: str) -> list[str]:
    path = write_notebook(tmp_path / "hand_in.ipynb", [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])
    return [note.removeprefix(REVIEW) for note in review_notes(extract(path))]


@pytest.mark.parametrize("code, expected", [
    ("import ctypes as c\n\ndef f(x):\n    return c.CDLL(None)\n", "line 1: imports `ctypes` (calls native code directly)"),
    ("from sys import _getframe as frame\n\ndef f(x):\n    return frame(1).f_locals\n",
     "line 4: uses `sys._getframe` (reads other frames)"),
    ("def f(x):\n    return x.__code__\n", "line 2: uses `.__code__` (reads or replaces code objects)"),
    ("def f(g):\n    return getattr(g, '__code__').co_consts\n", "line 2: names `__code__` (reads or replaces code objects)"),
    ("def f(x):\n    return eval('x + 1')\n", "line 2: calls `eval` (runs code built at run time)"),
    ("import torch\n\ndef f(x):\n    torch.testing.assert_close = print\n",
     "line 4: assigns `torch.testing.assert_close` (changes a library's code or settings)"),
    ("import torch.nn.functional as F\n\ndef f(x):\n    setattr(F, 'softmax', None)\n",
     "line 4: setattr on `torch.nn.functional` (changes a library's code or settings)"),
    ("import os as o\n\ndef f(x):\n    return o.listdir('/')\n", "line 4: uses `os.listdir` (lists files)"),
    ("from pathlib import Path\n\ndef f(x):\n    return list(Path('/').iterdir())\n", "line 4: uses `.iterdir` (lists files)"),
    ("import torch\n\nclass T(torch.Tensor):\n    pass\n",
     "line 3: class `T` subclasses `torch.Tensor` (its objects can answer comparisons as they like)"),
    ("class Yes:\n    __eq__ = lambda self, other: True\n",
     "line 1: class `Yes` defines `__eq__` (its objects can answer comparisons as they like)"),
    ("def f(x):\n    return vars(x)\n", "line 2: calls `vars` (reads namespaces directly)"),
    ("def f(g):\n    return getattr(g, '__co' + 'de__')\n",
     "line 2: calls `getattr` with a computed name (reaches attributes it does not name)"),
    ("import sys\n\ndef f(x):\n    return getattr(sys, 'modules')\n", "line 4: uses `sys.modules` (changes loaded modules)"),
    ("import operator\n\ndef f(x, name):\n    return operator.attrgetter(name)(x)\n",
     "line 4: uses `operator.attrgetter` (reaches attributes by computed names)"),
    ("def _settle():\n    return 1\n\nSETTLED = _settle()\n",
     "line 4: a constant calls `_settle` while the notebook loads (runs the notebook's own code before any test)"),
    ("import io\n\ndef f(x):\n    return io.open('/etc/hostname').read()\n", "line 4: uses `io.open` (opens files)"),
    ("import torch\n\ndef f(x):\n    with torch._C.DisableTorchFunction():\n        return x\n",
     "line 4: uses `.DisableTorchFunction` (switches torch's dispatch checks off)"),
])
def test_each_kind_of_reach_is_named_with_its_line(tmp_path, code, expected):
    assert f"cell 1, {expected}" in notes_of(tmp_path, code)


def test_ordinary_graded_code_is_never_flagged(tmp_path):
    """Methods that share a name with a flagged built-in (`model.eval()`, `torch.compile`), attributes of the
    student's own objects and torch's settings read, not written, are what correct notebooks do."""
    assert notes_of(tmp_path, '''
        import torch
        import torch.nn as nn
        from torch.nn import functional as F

        class Layer(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.proj = nn.Linear(d, d)
                for name in ("q_proj", "k_proj"):  # layers set and read by a computed name: common, harmless
                    setattr(self, name, getattr(nn, "Linear")(d, d))

            def forward(self, x):
                return F.softmax(self.proj(x), dim=-1)

        def run(model, x):
            model.eval()
            fast = torch.compile(model) if torch.backends.cuda.matmul.allow_tf32 else model
            return fast(x).float()
        ''') == []


def test_no_correct_notebook_of_the_course_is_flagged():
    """The solutions and every sample meant to score (correct, alternative) read as ordinary code."""
    notebooks = sorted(ROOT.glob("source/*/*.ipynb")) + sorted(
        p for p in ROOT.glob("samples/*/*.ipynb") if "correct" in p.stem)
    assert len(notebooks) >= 10
    assert {str(p.relative_to(ROOT)): review_notes(extract(p)) for p in notebooks if review_notes(extract(p))} == {}


def test_only_code_that_runs_when_grading_is_read(tmp_path):
    """An experiment cell (not run at grading time) may explore the interpreter; graded code may not."""
    found = notes_of(tmp_path, "import gc\nprint(len(gc.get_objects()))", "import gc\n\ndef f(x):\n    return gc.collect()\n")
    assert found == ["cell 1, line 1: imports `gc` (walks the interpreter's objects)",
                     "cell 2, line 1: imports `gc` (walks the interpreter's objects)"]


@pytest.mark.slow
def test_the_score_table_names_what_to_read_and_the_points_stand(make_course, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table's notes column unfolded
    root = make_course()
    peek = CORRECT + "\n\nimport inspect\n\ndef peek():\n    return inspect.currentframe().f_back\n"
    write_notebook(tmp_path / "batch" / "team_peek.ipynb", [nbformat.v4.new_code_cell(peek)])
    write_notebook(tmp_path / "batch" / "team_plain.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(tmp_path / "batch"),
                 "--gradebook", str(tmp_path / "g.db")]) == 0
    out = capsys.readouterr().out
    assert "read by hand (2)" in out
    assert "to read by hand (1):" in out and "team_plain:" not in out.split("to read by hand (1):")[1]
    assert "  team_peek: cell 1, line" in out and "uses `.f_back` (reads other frames) (and 1 more)" in out
    assert out.count("1/1") == 2  # a flag costs no points
