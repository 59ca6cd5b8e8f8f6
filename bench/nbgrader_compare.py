"""This grader against nbgrader on the same trivial assignment; prints a table (run: python bench/nbgrader_compare.py).

One two-question assignment (absmax int8 quantization, softmax attention: milliseconds of compute) is
authored twice in temporary folders, offline: as an nbgrader course (`nbgrader generate_assignment`,
then `nbgrader autograde`, which runs each notebook in a fresh kernel) and as a course of this project
(course_config.py, source/, grader_tests/, graded with the real `autograder grade` command). Both grade
the same submission notebooks: 10 correct, 5 with a wrong scale, 3 raising, 1 `sys.exit`, and in the
batch of 20 one endless loop (10 s call timeout on both sides). Every command starts cold.

Rows: one correct submission (whole command); the batches of 19 and 20 (nbgrader grades one notebook
after another; this project with 1 and 2 workers); the marginal cost of one more submission; and 2
workers against 1 on a batch of 40. `--skip-nbgrader` leaves nbgrader's side out (about half the run).
"""

from __future__ import annotations

import argparse
import os
import importlib.metadata
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ASSIGNMENT, Cells, write_course, write_notebook  # noqa: E402
from table import print_table  # noqa: E402

BIN = Path(sys.executable).parent
CALL_TIMEOUT_S = 10

SUITE = '''import pytest
import torch
from autograder.testing import assert_close


@pytest.mark.points(1)
@pytest.mark.question("absmax")
def test_absmax(submission):
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    q, scale = submission.absmax_quantize(x)
    assert_close(scale, x.abs().max() / 127, what="scale")


@pytest.mark.points(1)
@pytest.mark.question("attention")
def test_attention(submission):
    q = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    expected = torch.softmax(q @ q.transpose(-1, -2) / 8 ** 0.5, -1) @ q
    assert_close(submission.attention(q, q, q), expected, what="attention")
'''

# nbgrader's version of the same two tests: hidden assert cells, re-inserted from its database at autograde.
NBGRADER_TESTS = {
    "test_absmax": "x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))\n"
                   "q, scale = absmax_quantize(x)\n"
                   "assert torch.allclose(scale, x.abs().max() / 127)",
    "test_attention": "q = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))\n"
                      "expected = torch.softmax(q @ q.transpose(-1, -2) / 8 ** 0.5, -1) @ q\n"
                      "assert torch.allclose(attention(q, q, q), expected)",
}

CORRECT = '''import torch

def absmax_quantize(x):
    scale = x.abs().max() / 127
    return torch.round(x / scale).to(torch.int8), scale

def attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v
'''
VARIANTS = {
    "correct": (10, CORRECT),
    "wrong_scale": (5, CORRECT.replace("/ 127", "/ 128")),
    "raises": (3, CORRECT.replace("    scale = x", "    raise ValueError('not done')\n    scale = x")),
    "exits": (1, CORRECT.replace("    scale = x", "    import sys; sys.exit(0)\n    scale = x")),
}
ENDLESS = CORRECT.replace("    scale = x", "    while True:\n        pass\n    scale = x")


def _notebook_cells(answer: str) -> list:
    """The assignment notebook in nbgrader's format, with `answer` in its solution cell."""
    return [Cells.answer("answer", answer)] + [Cells.test(name, source) for name, source in NBGRADER_TESTS.items()]


def submissions(count: int, with_loop: bool) -> dict[str, str]:
    """{student id: answer code}: the variants in their proportions, repeated up to `count` (plus the loop)."""
    pool = [(name, code) for name, (n, code) in VARIANTS.items() for _ in range(n)]
    chosen = {f"{pool[i % len(pool)][0]}{i}": pool[i % len(pool)][1] for i in range(count)}
    return chosen | ({"endless": ENDLESS} if with_loop else {})


def _timed(command: list[str], cwd: Path | None = None) -> float:
    begin = time.perf_counter()
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # nbgrader runs `alembic`
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - begin
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


class Nbgrader:
    """An nbgrader course directory with the assignment generated and a database of its own."""

    def __init__(self, folder: Path):
        self.root = folder
        folder.mkdir(parents=True)
        (folder / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"c.CourseDirectory.root = {str(folder)!r}\n"
            "c.CourseDirectory.course_id = 'bench'\n"
            f"c.ExecutePreprocessor.timeout = {CALL_TIMEOUT_S}\n")
        source = CORRECT.replace("def absmax_quantize(x):\n", "def absmax_quantize(x):\n    ### BEGIN SOLUTION\n", 1)
        source = source.replace("\n\ndef attention", "\n    ### END SOLUTION\n\ndef attention", 1)
        write_notebook(folder / "source" / "ps1" / "ps1.ipynb", _notebook_cells(source))
        _timed([str(BIN / "nbgrader"), "generate_assignment", "ps1", "--force"], cwd=folder)

    def grade(self, answers: dict[str, str]) -> float:
        """`nbgrader autograde` of these submissions, cold; the submitted/ and autograded/ folders start empty."""
        subprocess.run(["rm", "-rf", str(self.root / "submitted"), str(self.root / "autograded")], check=True)
        for student, code in answers.items():
            write_notebook(self.root / "submitted" / student / "ps1" / "ps1.ipynb", _notebook_cells(code))
        return _timed([str(BIN / "nbgrader"), "autograde", "ps1", "--force"], cwd=self.root)


class Ours:
    """A course root of this project with the same assignment."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.root = write_course(folder, CORRECT, {"test_trivial.py": SUITE}, points=2,
                                 call_timeout_s=CALL_TIMEOUT_S, submission_timeout_s=60)
        self.runs = 0

    def grade(self, answers: dict[str, str], jobs: int) -> float:
        """`autograder grade` of these submissions into a fresh gradebook, cold."""
        self.runs += 1
        batch = self.root / f"batch-{self.runs}"
        for student, code in answers.items():
            write_notebook(batch / f"{student}.ipynb", _notebook_cells(code))
        return _timed([str(BIN / "autograder"), "--course-root", str(self.root), "grade", ASSIGNMENT, str(batch),
                       "--gradebook", str(batch / "gradebook.db"), "--jobs", str(jobs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-nbgrader", action="store_true", help="time this project only")
    args = parser.parse_args()
    nb: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = Ours(Path(tmp) / "ours")
        one = ours.grade(submissions(1, False), 1)
        b19 = {jobs: ours.grade(submissions(19, False), jobs) for jobs in (1, 2)}
        b20 = {jobs: ours.grade(submissions(19, True), jobs) for jobs in (1, 2)}
        b40 = {jobs: ours.grade(submissions(40, False), jobs) for jobs in (1, 2)}
        if not args.skip_nbgrader:
            theirs = Nbgrader(Path(tmp) / "nbgrader")
            nb = {"one": theirs.grade(submissions(1, False)), "19": theirs.grade(submissions(19, False)),
                  "20": theirs.grade(submissions(19, True))}

    def row(name: str, mine: float, theirs: float | None, note: str = "") -> tuple[str, str, str, str]:
        if theirs is None:
            return name, f"{mine:.2f} s", "", note
        return name, f"{mine:.2f} s", f"{theirs:.2f} s", note or f"{mine / theirs:.2f}x nbgrader's time"

    per_sub = (b19[1] - one) / 18
    rows = [
        row("one correct submission, whole command (cold)", one, nb.get("one")),
        row("batch of 19, 1 worker", b19[1], nb.get("19")),
        row("batch of 19, 2 workers", b19[2], nb.get("19")),
        row(f"batch of 20 with an endless loop ({CALL_TIMEOUT_S} s timeout), 1 worker", b20[1], nb.get("20")),
        row(f"batch of 20 with an endless loop ({CALL_TIMEOUT_S} s timeout), 2 workers", b20[2], nb.get("20")),
        row("marginal cost of one more submission, 1 worker", per_sub,
            (nb["19"] - nb["one"]) / 18 if nb else None, "(per submission, from the batch of 19)"),
        row("batch of 40, 1 worker", b40[1], None),
        row("batch of 40, 2 workers", b40[2], None, f"{b40[1] / b40[2]:.2f}x faster than 1 worker"),
    ]
    print_table(rows, header=("measurement", "ours", f"nbgrader {importlib.metadata.version('nbgrader')}", "comparison"))


if __name__ == "__main__":
    main()
