"""Stage 1: compile `source/<a>/` into the student release `release/<a>/`.

The notebook transformations are nbgrader's own preprocessors, run in the order of nbgrader's
`generate_assignment`, so a release is also a valid nbgrader assignment. Around them this module adds
what nbgrader lacks: errors that name notebook, cell and line; a deterministic output; an atomic write;
a leak check proving that no solution or hidden-test line reaches `release/`; and, for students, a first
cell on how to validate and hand in, a last cell that validates, and the metadata `validate` reads.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib.util
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import nbformat
from nbformat.validator import MissingIDFieldWarning
from nbgrader import utils as nbgrader_utils
from nbgrader.nbgraderformat import MetadataValidator, ValidationError
from nbgrader.nbgraderformat.common import SchemaMismatchError
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)
from traitlets.config import Config

import autograder
from autograder.course.config import Assignment, load_course
from autograder.student.validate import PACK, release_metadata

# The stubs are part of the contract in docs/authoring.md: pinned here, not left to nbgrader's defaults.
NBGRADER_CONFIG = Config(
    {
        "ClearSolutions": {
            "code_stub": {"python": "# YOUR CODE HERE\nraise NotImplementedError()"},
            "text_stub": "YOUR ANSWER HERE",
            "enforce_metadata": True,
        },
        "ClearHiddenTests": {"enforce_metadata": True},
        "ClearMarkScheme": {"enforce_metadata": True},
    }
)

# Names skipped in source/, release/ and grader_tests/: editor, Jupyter and Python by-products.
IGNORED = (".*", "__pycache__", "*.pyc")

# A line shorter than this, or naming fewer identifiers than MIN_NAMES (keywords do not count),
# is too common to prove a leak (`return logits`, `else:`, `)`).
MIN_CHARS = 12
MIN_NAMES = 2
# Idioms that pass both tests but that any torch code, hidden or public, writes the same way.
COMMON_LINES = frozenset({
    "with torch.no_grad():",
    "with torch.inference_mode():",
    'if __name__ == "__main__":',
})
# Lines these packages' own source contains are public idioms (`for module in model.modules():`), not solutions.
COMMON_LIBRARIES = ("torch", "transformers")
_IMPORT = re.compile(r"(from [\w.]+ )?import [\w.,() *]+")

# The first and last cell of every release notebook: how students check and hand in their work.
GUIDE = """## Before you hand in

**What the grader runs.** Only the top-level imports, `def` and `class` statements and UPPER_CASE
constants of this notebook run when it is graded; experiments, prints, downloads and other variables do
not. Your graded functions must not rely on anything else set at the top level: create it inside the
function, pass it as an argument or make it an UPPER_CASE constant. The grader has only the course's
packages (torch, transformers, ...): an import of anything else fails there.

**Time and memory.** Each call of a graded function may take {call:g} s, all calls together {total:g} s
(reloading this notebook after your code crashed, exited or timed out counts too), and your code may use
{memory} MB of memory. A function that runs out of time in two calls in a row is not
called again for your notebook (its later checks fail as timeouts); a call that finishes in between resets
the count, so a function that finishes every call in time is never skipped. Prints are not shown anywhere.

**CPU and GPU.** The hidden tests also call your graded functions with CUDA tensors and models on a GPU
runner, and such checks may carry points. Every graded function must work on the CPU and on CUDA alike:
create new tensors on the input's device (`device=x.device`, `torch.zeros_like(x)`; for a model, the device
of its parameters: move what you build, the tokenizer's output too, to `model.device`), return results on the
input's device, and where you multiply integer tensors (quantization codes, say) do not use `@` or `matmul`
on them (CUDA has no integer matrix product: multiply in float64, which is exact for small integers). Where
your machine has a GPU, each task's public check runs a CUDA case too.

**Check** each task with the public check under it (hints only; hidden tests grade).

**Validate** the whole notebook before handing in: save it, then run the last cell (`validate()`), or in a
terminal `autograder validate NOTEBOOK`. It lists what would cost points whatever your results: graded
functions missing or with another signature than here, code they rely on that does not run when grading,
imports the grader lacks, edited locked cells and library calls a task forbids; and it runs the public checks.

**Pack** your hand-in with `{pack}`."""
VALIDATE_CALL = "from autograder.validate import validate\n\nvalidate()  # checks the notebook as last saved"
_GUIDE_ID, _VALIDATE_ID = "before_you_hand_in", "validate"

# A hidden suite's forbidden APIs per question, collected by pytest in a process of its own (the suite's
# modules import the course's libraries and helpers that must not stay in this process).
_COLLECT_MARKS = """
import json, os, sys, pytest
found, gpu = {}, []
class Collect:
    def pytest_collection_modifyitems(self, items):
        for item in items:
            question = item.get_closest_marker("question")
            apis = found.setdefault(question.args[0] if question else item.module.__name__.removeprefix("test_"), [])
            apis += [a for m in item.iter_markers("forbidden") for a in m.args if a not in apis]
            gpu.extend([item.nodeid] if item.get_closest_marker("gpu") else [])
code = pytest.main([sys.argv[1], "--collect-only", "-q", "-c", os.devnull, "--rootdir", sys.argv[1],
                    "-p", "no:cacheprovider", "-W", "ignore"], plugins=[Collect()])
sys.stdout.write("\\n" + json.dumps({"forbidden": found, "gpu": gpu}) if code == 0 else "")
sys.exit(int(code))
"""


class ReleaseError(Exception):
    """A source or release problem, phrased for the instructor; nothing under release/ was changed."""


@dataclass(frozen=True)
class _Region:
    name: str
    begin: str
    end: str
    allowed: Callable  # nbgrader.utils predicate: may a cell hold this region?
    cell_kind: str


_SOLUTIONS = ClearSolutions(config=NBGRADER_CONFIG)
_HIDDEN = ClearHiddenTests(config=NBGRADER_CONFIG)
_MARK_SCHEME = ClearMarkScheme(config=NBGRADER_CONFIG)

# nbgrader's generate_assignment minus the steps that need its database or header files.
_PIPELINE = (
    LockCells(config=NBGRADER_CONFIG),
    _SOLUTIONS,
    ClearOutput(config=NBGRADER_CONFIG),
    _HIDDEN,
    _MARK_SCHEME,
    ComputeChecksums(config=NBGRADER_CONFIG),
    CheckCellMetadata(config=NBGRADER_CONFIG),
)

# The delimiters come from the preprocessors, so validation and compilation agree on them.
_REGIONS = (
    _Region("solution", _SOLUTIONS.begin_solution_delimeter, _SOLUTIONS.end_solution_delimeter,
            nbgrader_utils.is_solution, "an answer cell (nbgrader `solution: true`)"),
    _Region("hidden tests", _HIDDEN.begin_test_delimeter, _HIDDEN.end_test_delimeter,
            nbgrader_utils.is_grade, "a test cell (nbgrader `grade: true`)"),
    _Region("mark scheme", _MARK_SCHEME.begin_mark_scheme_delimeter, _MARK_SCHEME.end_mark_scheme_delimeter,
            nbgrader_utils.is_task, "a task cell (nbgrader `task: true`)"),
)


@dataclass(frozen=True)
class _Source:
    nb: nbformat.NotebookNode
    secrets: list[tuple[str, str]]  # (line, where it comes from) for every line hidden from students


# --------------------------------------------------------------------------------------------------
# Public API


def compile_assignment(assignment: Assignment) -> dict[str, bytes]:
    """The would-be release: path relative to release/<a>/ -> bytes. Pure; raises ReleaseError."""
    notebooks = set(assignment.source_notebooks())
    return {
        rel: _compile_notebook(_parse_source(path, assignment.root).nb, assignment) if path in notebooks
        else path.read_bytes()
        for rel, path in _files(assignment.source_dir).items()
    }


def release_assignment(
    assignment: Assignment,
    before_write: Callable[[Assignment, Path], None] | None = None,
) -> list[Path]:
    """Compile, leak-check and atomically replace release/<a>/; returns the files written.

    `before_write(assignment, staging_dir)` sees the complete release in a temporary folder before it
    replaces release/<a>/; raising ReleaseError there (e.g. a failed verify) leaves release/ as it was.
    """
    files = compile_assignment(assignment)
    leaks = find_leaks(assignment, _release_tree(assignment, replaced_by=files))
    if leaks:
        raise ReleaseError(f"release of {assignment.id} refused, it would leak hidden lines:\n  " + "\n  ".join(leaks))

    target = assignment.release_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{assignment.id}.staging-", dir=target.parent))
    try:
        staging.chmod(target.parent.stat().st_mode & 0o777)
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        if before_write:
            before_write(assignment, staging)
        _swap(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target / rel for rel in files]


def check_release(assignment: Assignment) -> list[str]:
    """Problems with release/<a>/ as it is on disk: stale, missing or extra files, and leaks."""
    expected = compile_assignment(assignment)
    target = assignment.release_dir
    fix = f"run `autograder release {assignment.id}`"
    if not target.is_dir():
        problems = [f"{_shown(target, assignment)}/ does not exist; {fix}"]
    else:
        actual = {rel: path.read_bytes() for rel, path in _files(target).items()}
        problems = []
        for rel in sorted(expected.keys() | actual.keys()):
            shown = _shown(target / rel, assignment)
            if rel not in actual:
                problems.append(f"{shown} is missing; {fix}")
            elif rel not in expected:
                source = _shown(assignment.source_dir, assignment)
                problems.append(f"{shown} does not come from {source}/; {fix} to remove it")
            elif actual[rel] != expected[rel]:
                problems.append(f"{shown} is stale (differs from what the source compiles to); {fix}")
    return problems + find_leaks(assignment, _release_tree(assignment))


def find_leaks(assignment: Assignment, release_files: Mapping[str, bytes]) -> list[str]:
    """Lines (or whole binary files) of `release_files` that are hidden anywhere in the course and concern
    `assignment`: found under release/<a>/, or hidden in <a>'s own sources.

    `release_files` maps course-root-relative paths to bytes. Hidden are, for every assignment of the
    course: solution, hidden-test and mark-scheme regions of its source notebooks (whole answer cells
    without markers), and every file of grader_tests/<a>/. One check serves `release A`, `release --check A`
    and the whole course, so they cannot disagree. Lines too common to identify a solution (`is_trivial`,
    or written the same way in the course's libraries) are never reported.
    """
    lines, blobs = _course_secrets(assignment)
    own = _shown(assignment.release_dir, assignment) + "/"
    leaks = []
    for shown, data in sorted(release_files.items()):
        located = _located_lines(shown, data)
        if located is None:
            leaks += [f"{shown} is a copy of {origin}, hidden in {owner}"
                      for owner, origin in blobs.get(hashlib.sha256(data).hexdigest(), ())
                      if shown.startswith(own) or owner == assignment.id][:1]
            continue
        for where, line in located:
            found = lines.get(_normalize(line), ())
            if any(shown.startswith(own) or owner == assignment.id for owner, _ in found) \
                    and _normalize(line) not in _library_lines():
                owner, origin = next((o for o in found if o[0] == assignment.id), found[0])
                leaks.append(f"{where}: {line.strip()!r} comes from {origin}, hidden in {owner}")
    return leaks


def is_trivial(line: str) -> bool:
    """Too common to prove a leak: blank, comment, import, bare keywords/brackets, very short, or idiom."""
    text = _normalize(line)
    names = [w for w in re.findall(r"\w+", text) if not keyword.iskeyword(w)]
    return (
        text in COMMON_LINES
        or text.startswith("#")
        or _IMPORT.fullmatch(text) is not None
        or len(text) < MIN_CHARS
        or len(names) < MIN_NAMES
    )


# --------------------------------------------------------------------------------------------------
# Reading and validating sources


def _parse_source(path: Path, root: Path) -> _Source:
    """Read a source notebook; every problem is a ReleaseError naming notebook, cell and line."""
    label = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReleaseError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    invalid: dict = {}
    try:
        with warnings.catch_warnings():
            # nbformat would invent random cell ids, which breaks byte-identical releases.
            warnings.simplefilter("error", MissingIDFieldWarning)
            nb = nbformat.reads(text, as_version=4, capture_validation_error=invalid)
    except nbformat.reader.NotJSONError as exc:
        cause = exc.__cause__
        where = ""
        if isinstance(cause, json.JSONDecodeError):
            where = f" (line {cause.lineno}, column {cause.colno}: {cause.msg})"
        raise ReleaseError(f"{label}: not valid notebook JSON{where}") from None
    except MissingIDFieldWarning:
        raise ReleaseError(f"{label}: cells without an id; open and save it in Jupyter to add them") from None
    except Exception as exc:  # nbformat raises TypeError, AttributeError, ... on JSON that is no notebook
        raise ReleaseError(f"{label}: not a valid notebook: {exc}") from None
    if "ValidationError" in invalid:
        raise ReleaseError(f"{label}: not a valid notebook: {invalid['ValidationError'].message}")

    validator = MetadataValidator()
    seen: dict[str, int] = {}
    secrets: list[tuple[str, str]] = []
    for index, cell in enumerate(nb.cells, start=1):
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        where = f"{label}: cell {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")
        graded = meta.get("solution") or meta.get("grade") or meta.get("locked")
        if graded and not grade_id:
            raise ReleaseError(f"{where}: nbgrader cell without a grade_id; give it a unique one (e.g. the task name)")
        try:
            validator.validate_cell(cell)
        except (ValidationError, SchemaMismatchError) as exc:
            raise ReleaseError(f"{where}: invalid nbgrader metadata: {getattr(exc, 'message', exc)}") from None
        if graded and grade_id in seen:
            raise ReleaseError(f"{where}: duplicate grade_id, also used by cell {seen[grade_id]}")
        if graded:
            seen[grade_id] = index
        if cell.cell_type == "markdown" and meta.get("solution") and not _asks(nb.cells[index - 2] if index > 1 else None):
            raise ReleaseError(f"{where}: a written answer's whole text becomes \"YOUR ANSWER HERE\" in the release, "
                               "so students would never see the question: put the question in a markdown cell of "
                               "its own just above (this cell keeps only the model answer)")
        secrets += [(line, f"{label} cell {index} line {n}") for n, line in _hidden_lines(cell, where)]
    return _Source(nb, secrets)


def _asks(cell) -> bool:
    """A cell that can hold a written answer's question: markdown that the release shows as it is."""
    return cell is not None and cell.cell_type == "markdown" and not cell.metadata.get("nbgrader", {}).get("solution")


def _hidden_lines(cell, where: str) -> list[tuple[int, str]]:
    """Validate the cell's markers and return the lines students must not see, numbered from 1."""
    lines = cell.source.split("\n")
    hidden: list[tuple[int, str]] = []
    open_region: _Region | None = None
    opened_at = 0
    saw_solution_marker = False
    for n, line in enumerate(lines, start=1):
        marker = next(((r, r.begin in line) for r in _REGIONS if r.begin in line or r.end in line), None)
        if marker is None:
            if open_region:
                hidden.append((n, line))
            continue
        region, begins = marker
        saw_solution_marker |= region.name == "solution"
        if not region.allowed(cell):
            raise ReleaseError(
                f"{where}, line {n}: a {region.name} marker may only appear in {region.cell_kind}; "
                "fix the cell's nbgrader metadata or remove the marker"
            )
        if begins and open_region:
            raise ReleaseError(
                f"{where}, line {n}: {region.begin!r} inside the {open_region.name} region opened on "
                f"line {opened_at}; regions cannot nest"
            )
        if begins:
            open_region, opened_at = region, n
        elif open_region is not region:
            raise ReleaseError(f"{where}, line {n}: {region.end!r} without a matching {region.begin!r} before it")
        else:
            open_region = None
    if open_region:
        raise ReleaseError(f"{where}, line {opened_at}: {open_region.begin!r} is never closed by {open_region.end!r}")
    if nbgrader_utils.is_solution(cell) and not saw_solution_marker:
        return list(enumerate(lines, start=1))  # nbgrader replaces the whole cell: all of it is the answer
    return hidden


def _compile_notebook(nb: nbformat.NotebookNode, assignment: Assignment) -> bytes:
    limits = assignment.limits
    guide = GUIDE.format(pack=PACK, call=limits.call_timeout_s, total=limits.submission_timeout_s,
                         memory=limits.memory_mb)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(guide, id="before-you-hand-in", metadata={
        "nbgrader": {"grade_id": _GUIDE_ID, "solution": False, "grade": False, "locked": True, "schema_version": 3}}))
    nb.cells.append(nbformat.v4.new_code_cell(VALIDATE_CALL, id="validate", metadata={"nbgrader": {
        "grade_id": _VALIDATE_ID, "solution": False, "grade": True, "locked": True, "points": 0,
        "schema_version": 3}}))  # a test cell: the grader never runs it
    resources: dict = {}
    for step in _PIPELINE:
        nb, resources = step(nb, resources)
    nb.metadata["autograder"] = release_metadata(nb, assignment.id, assignment.extraction,
                                                 _forbidden_apis(assignment.tests_dir))
    return (nbformat.writes(nb) + "\n").encode("utf-8")


def _suite_marks(tests_dir: Path) -> dict:
    """What the hidden suite's markers say, as grading sees them: `forbidden` (question -> the APIs its
    tests forbid) and `gpu` (the ids of the GPU-marked tests, as results name them)."""
    files = _files(tests_dir) if tests_dir.is_dir() else {}
    digest = hashlib.sha256(b"".join(rel.encode() + b"\0" + path.read_bytes() for rel, path in files.items()))
    return json.loads(_collected(str(tests_dir), digest.hexdigest())) if files else {"forbidden": {}, "gpu": []}


def _forbidden_apis(tests_dir: Path) -> dict[str, list[str]]:
    return _suite_marks(tests_dir)["forbidden"]


def gpu_marked_tests(tests_dir: Path) -> set[str]:
    return set(_suite_marks(tests_dir)["gpu"])


@functools.lru_cache(maxsize=32)
def _collected(tests_dir: str, digest: str) -> str:
    """`_COLLECT_MARKS`' JSON for a suite; `digest` names the suite's content (the cache key)."""
    package_root = str(Path(autograder.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _COLLECT_MARKS, tests_dir], capture_output=True, text=True,
                          env=env, cwd=tests_dir)
    if done.returncode != 0:
        detail = (done.stdout + done.stderr).strip().splitlines()
        raise ReleaseError(f"{tests_dir}: pytest could not collect the hidden suite: {detail[-1] if detail else ''}")
    return done.stdout.rsplit("\n", 1)[-1]


# --------------------------------------------------------------------------------------------------
# Leak check


def _normalize(line: str) -> str:
    return " ".join(line.split())


def _course_secrets(assignment: Assignment) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]:
    """Hidden text lines (normalized line -> [(assignment id, origin)]) and hidden binary files (sha256 -> the
    same) of every assignment of `assignment`'s course (and of `assignment`, declared there or not)."""
    lines: dict[str, list[tuple[str, str]]] = {}
    blobs: dict[str, list[tuple[str, str]]] = {}
    for each in {**load_course(assignment.root).assignments, assignment.id: assignment}.values():
        for path in each.source_notebooks():
            for line, origin in _parse_source(path, each.root).secrets:
                if not is_trivial(line):
                    lines.setdefault(_normalize(line), []).append((each.id, origin))
        for path in _files(each.tests_dir).values():
            shown = _shown(path, each)
            data = path.read_bytes()
            located = _located_lines(shown, data)
            if located is None:
                blobs.setdefault(hashlib.sha256(data).hexdigest(), []).append((each.id, shown))
                continue
            for where, line in located:
                if not is_trivial(line):
                    lines.setdefault(_normalize(line), []).append((each.id, where))
    return lines, blobs


@functools.lru_cache(maxsize=1)
def _library_lines() -> frozenset[str]:
    """Every normalized line of the course's libraries' Python source (a few seconds, read only when a
    hidden line was found in a release): an idiom torch or transformers write themselves identifies no
    solution."""
    found: set[str] = set()
    for package in COMMON_LIBRARIES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for dirpath, _, filenames in os.walk(folder):
                for name in filenames:
                    if name.endswith(".py"):
                        with open(os.path.join(dirpath, name), encoding="utf-8", errors="replace") as file:
                            found.update(_normalize(line) for line in file)
    return frozenset(found)


def _located_lines(shown: str, data: bytes) -> Iterator[tuple[str, str]] | None:
    """(location, line) of a text file or of a notebook's cells; None for a binary file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if shown.endswith(".ipynb"):
        try:
            nb = nbformat.reads(text, as_version=4, capture_validation_error={})
        except Exception:  # nbformat's errors vary by damage; a damaged notebook is scanned as text
            pass
        else:
            return (
                (f"{shown} cell {index} line {n}", line)
                for index, cell in enumerate(nb.cells, start=1)
                for n, line in enumerate(cell.source.split("\n"), start=1)
            )
    return ((f"{shown} line {n}", line) for n, line in enumerate(text.split("\n"), start=1))


# --------------------------------------------------------------------------------------------------
# Files


def _files(folder: Path) -> dict[str, Path]:
    """Files under `folder` by relative POSIX path, sorted, skipping IGNORED names at any depth."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _ignored(d)]
        for name in filenames:
            if not _ignored(name):
                path = Path(dirpath, name)
                found[path.relative_to(folder).as_posix()] = path
    return dict(sorted(found.items()))


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED)


def _release_tree(assignment: Assignment, replaced_by: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """Everything under release/ (all assignments) by course-root-relative path; with `replaced_by`,
    release/<a>/ as it is about to become."""
    tree = {_shown(path, assignment): path.read_bytes() for path in _files(assignment.release_dir.parent).values()}
    if replaced_by is None:
        return tree
    prefix = _shown(assignment.release_dir, assignment) + "/"
    kept = {shown: data for shown, data in tree.items() if not shown.startswith(prefix)}
    return kept | {prefix + rel: data for rel, data in replaced_by.items()}


def _shown(path: Path, assignment: Assignment) -> str:
    return path.relative_to(assignment.root).as_posix()


def _swap(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames only, so no reader sees a half-written release."""
    if not target.exists():
        os.replace(staging, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, trash / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(trash / target.name, target)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
