"""`autograder new`: a new assignment that verifies, releases and grades from its first minute.

Writes every part an assignment needs, in the course's conventions, around one example task: the source
notebook (setup cell, the grading paragraph every release states, the task with solution and hidden-test
markers, its public check, a reflection), `public_checks.py` (a CPU and a CUDA check), a hidden suite
with one test, two samples with `expected.json`, the mistakes catalogue and the `course_config.py` entry.
The instructor then replaces the example by the assignment's own tasks.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import nbformat

from autograder.authoring.release import release_assignment
from autograder.course.config import CONFIG_FILE, Course, load_course
from autograder.grading.handins import EXPECTED_SCORES

# The same paragraph opens every assignment's notebook: what students may rely on when graded.
GRADING_PARAGRAPH = (
    "**How your functions are graded.** They run in an isolated process and the hidden tests call them with "
    "fresh inputs. Before every call the grader sets torch's numerics switches to their defaults (TF32 off, "
    'float32 matmul precision `"highest"`, default dtype float32); if your function changes one, the grader '
    "resets it after the call, judges the result as usual and notes it in your feedback, so do not rely on "
    "them. A library function that a task asks you to write yourself is forbidden inside your graded functions "
    "however it is reached (an alias, `getattr`, `torch._C`, `torch.ops`, or a library class that calls it): "
    "such a call fails that check."
)
_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*")

SOLUTION = '''def rms_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x divided by the root mean square of its last dimension (plus eps under the root)."""
    ### BEGIN SOLUTION
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    ### END SOLUTION'''

PUBLIC_CHECKS = '''"""Public checks for {id}: small, hand-checkable cases for quick feedback; the hidden suite grades."""

import torch

from autograder.checks import check, public_check, same_on_gpu  # noqa: F401  (the notebook imports `check`)
from autograder.testing import assert_close


@public_check("example")
def normalizes_each_row(rms_normalize):
    x = torch.tensor([[2.0, 2.0], [3.0, -3.0]])
    assert_close(rms_normalize(x), torch.tensor([[1.0, 1.0], [1.0, -1.0]]), what="rms_normalize([[2, 2], [3, -3]])")


@public_check("example", cuda=True)
def normalizes_on_the_inputs_device(rms_normalize):
    same_on_gpu(rms_normalize, torch.tensor([[3.0, -4.0]]), what="rms_normalize([[3, -4]])")
'''

HIDDEN_TEST = '''"""rms_normalize: x / sqrt(mean(x**2 over the last dim) + eps), on the input's device and dtype."""

import pytest
import torch

from autograder.testing import assert_close

pytestmark = pytest.mark.question("example")


def reference(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / (x.double().square().mean(-1, keepdim=True) + eps).sqrt().to(x.dtype)


@pytest.mark.points(1)
def test_matches_the_reference_on_rows_of_different_scale(submission):
    """The row of scale 1e-3 has a mean square of eps's size: eps must be added, under the root."""
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([[1e-3], [1.0], [30.0]])
    assert_close(submission.rms_normalize(x), reference(x), what="rms_normalize(x) for 3 rows of 8")
'''

MISTAKE = ("mean_over_rows", "the mean is taken over the rows (dim=0): every value is wrong",
           "return x * torch.rsqrt(x.pow(2).mean(dim=0, keepdim=True) + eps)")

MISTAKES_DOC = '''# Mistakes the {id} suite catches

Read this before adding a test: each row is a realistic mistake, the hidden test that fails it and the
start of the message the student sees. Tests live in `grader_tests/{id}/`; samples named in the last
column are in `samples/{id}/` with their scores in `expected.json`.

## Example (`test_example.py`)

| mistake | caught by | student sees | sample |
| --- | --- | --- | --- |
| mean over the rows instead of the last dimension | `test_matches_the_reference_on_rows_of_different_scale` | `rms_normalize(x) for 3 rows of 8: ...` | `{mistake}` |
'''


class ScaffoldError(Exception):
    """Why the assignment was not created; nothing was written."""


def new_assignment(course: Course, assignment_id: str, title: str, due: str | None = None) -> list[Path]:
    """Create assignment `assignment_id` in `course` and compile its release; returns the paths written."""
    root = course.root
    if not _ID.fullmatch(assignment_id):
        raise ScaffoldError(f"{assignment_id!r} is no assignment id: letters, digits, _ and - (e.g. 05_pruning)")
    if assignment_id in course.assignments:
        raise ScaffoldError(f"{CONFIG_FILE} already declares {assignment_id}")
    folders = [root / kind / assignment_id for kind in ("source", "grader_tests", "samples", "release")]
    doc = root / "docs" / "mistakes" / f"{assignment_id}.md"
    taken = [p.relative_to(root).as_posix() for p in (*folders, doc) if p.exists()]
    if taken:
        raise ScaffoldError(f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; "
                            "choose another id or remove them")
    due = due or (dt.date.today() + dt.timedelta(days=14)).strftime("%Y-%m-%d 23:59")
    config = root / CONFIG_FILE
    config_before = config.read_text(encoding="utf-8")
    entry = (f'{{"id": {json.dumps(assignment_id)}, "title": {json.dumps(title)}, "due": {json.dumps(due)}, '
             '"points": 1, "gpu": False, "mutation_threshold": 0.9}')
    config_after = _with_entry(config_before, entry)

    written = _write_files(root, assignment_id, title)
    try:
        config.write_text(config_after, encoding="utf-8")
        assignment = load_course(root).get(assignment_id)
        written += [config] + release_assignment(assignment)
    except Exception as exc:  # undo: a half-made assignment would break every later command
        config.write_text(config_before, encoding="utf-8")
        for path in (*folders, doc):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise ScaffoldError(f"{assignment_id} not created: {exc}") from exc
    return written


def _with_entry(text: str, entry: str) -> str:
    """course_config.py with `entry` appended to its ASSIGNMENTS list literal, the rest unchanged."""
    found = [node.value for node in ast.parse(text).body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "ASSIGNMENTS" for t in node.targets)]
    if len(found) != 1 or not isinstance(found[0], ast.List):
        raise ScaffoldError(f"{CONFIG_FILE}: ASSIGNMENTS is not one list literal; add this entry by hand:\n    {entry}")
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def offset(line: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[line - 1] + len(text[starts[line - 1]:].encode()[:col].decode())

    close = offset(found[0].end_lineno, found[0].end_col_offset) - 1  # the list's `]`
    head = text[:close]
    if found[0].elts:
        last = found[0].elts[-1]
        after = offset(last.end_lineno, last.end_col_offset)
        if "," not in text[after:close].split("#")[0]:
            head = text[:after] + "," + text[after:close]
    return head + ("" if head.endswith("\n") else "\n") + f"    {entry},\n" + text[close:]


def _write_files(root: Path, aid: str, title: str) -> list[Path]:
    code = SOLUTION.replace("    ### BEGIN SOLUTION\n", "").replace("\n    ### END SOLUTION", "")
    files = {
        f"source/{aid}/{aid}.ipynb": nbformat.writes(_notebook(aid, title)) + "\n",
        f"source/{aid}/public_checks.py": PUBLIC_CHECKS.format(id=aid),
        f"grader_tests/{aid}/test_example.py": HIDDEN_TEST,
        f"samples/{aid}/correct.ipynb": _sample("import torch\n\n\n" + code),
        f"samples/{aid}/{MISTAKE[0]}.ipynb": _sample("import torch\n\n\n" + code.replace(code.split("\n")[-1].strip(),
                                                                                           MISTAKE[2])),
        f"samples/{aid}/{EXPECTED_SCORES}": json.dumps({
            "correct": {"points": 1, "why": "the source solution"},
            MISTAKE[0]: {"points": 0, "why": MISTAKE[1]}}, indent=2) + "\n",
        f"docs/mistakes/{aid}.md": MISTAKES_DOC.format(id=aid, mistake=MISTAKE[0]),
    }
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, locked: bool, points: float | None = None) -> dict:
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": locked, "schema_version": 3}
    return {"nbgrader": meta | ({} if points is None else {"points": points})}


def _notebook(aid: str, title: str) -> nbformat.NotebookNode:
    markdown, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        markdown(f"# {title}\n\nWhat this assignment teaches and why it matters (replace this text).\n\n"
                 f"{GRADING_PARAGRAPH}", id="intro"),
        code("import torch\n\nfrom public_checks import check", id="setup",
             metadata=_nbgrader("setup", solution=False, grade=False, locked=True)),
        markdown("## 1. An example task (replace it)\n\nImplement `rms_normalize(x, eps=1e-6)`: divide each "
                 "row of `x` (its last dimension) by its root mean square, `sqrt(mean(x**2) + eps)`. The result "
                 "has the shape, dtype and device of `x`.", id="example-task"),
        code(SOLUTION, id="example", metadata=_nbgrader("example", solution=True, grade=False, locked=False)),
        code('check("example")\n### BEGIN HIDDEN TESTS\nassert rms_normalize(torch.zeros(1, 3)).abs().sum() == 0\n'
             "### END HIDDEN TESTS", id="check-example",
             metadata=_nbgrader("check_example", solution=False, grade=True, locked=True, points=0)),
        # the release replaces a written answer's whole cell: the question stands in the cell above it
        markdown("**Reflection.** Why does `eps` sit under the root and not outside it?", id="reflection-question"),
        markdown("Under the root it bounds the divisor away from zero for an all-zero row, and its effect on "
                 "ordinary rows stays negligible whatever their scale.", id="reflection-example",
                 metadata=_nbgrader("reflection_example", solution=True, grade=True, locked=False, points=0)),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _sample(code: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code, id="work")])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nbformat.writes(nb) + "\n"
