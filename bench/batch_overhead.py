"""What a batch costs beyond the students' own compute; prints a table (run: python bench/batch_overhead.py).

A trivial two-question assignment (absmax quantization, softmax attention: milliseconds of compute)
graded with the real `autograder grade` command, cold, in one run on one machine:
- one correct submission, the whole command;
- 19 submissions (10 correct, 5 partly wrong, 3 raising, 1 `sys.exit`) with 1 and with 2 workers;
- the same 19 plus one endless loop, with 2 workers;
- the marginal cost of one more submission (the 19-batch minus the single one, per extra submission).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ASSIGNMENT, write_course, write_notebook  # noqa: E402
from table import print_table  # noqa: E402

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


def _course(folder: Path, with_loop: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    root = write_course(folder, CORRECT, {"test_trivial.py": SUITE}, points=2, call_timeout_s=10,
                        submission_timeout_s=60)
    batch = folder / "batch"
    for name, (count, code) in VARIANTS.items():
        for i in range(count):
            write_notebook(batch / f"{name}_{i}.ipynb", [_cell(code)])
    if with_loop:
        write_notebook(batch / "endless.ipynb", [_cell(ENDLESS)])
    return root, batch


def _cell(code: str):
    import nbformat

    return nbformat.v4.new_code_cell(code)


def _grade(root: Path, paths: list[Path], jobs: int) -> float:
    command = [str(Path(sys.executable).with_name("autograder")), "--course-root", str(root), "grade", ASSIGNMENT,
               *map(str, paths), "--gradebook", str(root / f"gradebook-{time.monotonic_ns()}.db"), "--jobs", str(jobs)]
    begin = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - begin


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, batch = _course(Path(tmp) / "course", with_loop=False)
        one = _grade(root, [batch / "correct_0.ipynb"], 1)
        batch_1 = _grade(root, [batch], 1)
        batch_2 = _grade(root, [batch], 2)
        loop_root, loop_batch = _course(Path(tmp) / "with_loop", with_loop=True)
        loop_2 = _grade(loop_root, [loop_batch], 2)
    n = sum(count for count, _ in VARIANTS.values())
    rows = [
        ("one correct submission, whole command", one, "1.0x"),
        (f"batch of {n}, 1 worker", batch_1, f"{batch_1 / one:.2f}x"),
        (f"batch of {n}, 2 workers", batch_2, f"{batch_2 / one:.2f}x (2 workers: {batch_1 / batch_2:.2f}x faster)"),
        (f"batch of {n + 1} with an endless loop (10 s call timeout), 2 workers", loop_2, f"{loop_2 / one:.2f}x"),
        ("marginal cost of one more submission, 1 worker", (batch_1 - one) / (n - 1), "(per submission)"),
    ]
    print_table([(name, f"{seconds:.2f} s", ratio) for name, seconds, ratio in rows])


if __name__ == "__main__":
    main()
