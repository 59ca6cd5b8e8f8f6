"""Stage 2: a submission notebook becomes the code that runs at grading time.

By default only imports, function and class definitions and UPPER_CASE constants run: experiments,
hub downloads, shell escapes and magics in a student's notebook must not run (or fail) while grading.
Each kept statement runs on its own in the sandbox, so one broken import does not hide the rest.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.handins import SubmissionFormatError, read_notebook
from autograder.handins import find_notebook, submission_hash  # noqa: F401 - the scheduler imports them from here

_IPYTHON_LINE = re.compile(r"^(\s*)[!%]")
# The notebook's own public checks import a module that only exists next to the student's notebook.
PUBLIC_CHECKS_MODULE = "public_checks"
_KEPT_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class CodeCell:
    """One cell's source (IPython syntax neutralised) and the indices of its statements to run."""

    number: int  # 1-based position in the notebook, as students count cells
    source: str
    keep: tuple[int, ...]

    @property
    def filename(self) -> str:
        return f"<cell {self.number}>"


@dataclass(frozen=True)
class Extracted:
    cells: tuple[CodeCell, ...]
    warnings: tuple[str, ...] = field(default=())

    def defined_names(self) -> set[str]:
        names = set()
        for cell in self.cells:
            body = ast.parse(cell.source).body
            for i in cell.keep:
                node = body[i]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
        return names


def _read(notebook: Path) -> nbformat.NotebookNode:
    try:
        raw = read_notebook(notebook).decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionFormatError(f"{notebook.name} is not UTF-8 text, so not a notebook") from None
    try:
        nb = nbformat.reads(raw, as_version=4)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError):
        raise SubmissionFormatError(f"{notebook.name} is not valid notebook JSON (was it saved completely?)") from None
    except Exception as exc:  # nbformat raises assorted errors for structurally broken files
        raise SubmissionFormatError(f"{notebook.name} could not be read as a notebook: {exc}") from None
    if not isinstance(nb.get("cells"), list):
        raise SubmissionFormatError(f"{notebook.name} has no list of cells")
    return nb


def _is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def _parse_neutralising_ipython(source: str, filename: str) -> tuple[str, list[ast.stmt]]:
    """Parse a cell; each `!pip install x` or `%timeit f()` line the parser trips over becomes `pass`
    (same indentation, same line numbers). Lines inside string literals never trip it, so they stay."""
    lines = source.splitlines()
    while True:
        try:
            return "\n".join(lines), ast.parse("\n".join(lines), filename=filename).body
        except SyntaxError as exc:
            index = (exc.lineno or 0) - 1
            if not (0 <= index < len(lines)) or not _IPYTHON_LINE.match(lines[index]):
                raise
            lines[index] = _IPYTHON_LINE.sub(r"\1pass  # ", lines[index])


def _is_constant(node: ast.stmt) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)


def _keep(node: ast.stmt, mode: str) -> bool:
    if isinstance(node, ast.ImportFrom) and node.module == PUBLIC_CHECKS_MODULE:
        return False
    if mode == "cells":
        return True
    if isinstance(node, _KEPT_DEFINITIONS):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and getattr(node, "value", None) is not None:
        return _is_constant(node)
    return False


def extract(notebook: Path, mode: str = "definitions") -> Extracted:
    """Read `notebook` and keep what runs at grading time; syntax errors become warnings."""
    nb = _read(Path(notebook))
    cells, warnings = [], []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.get("cell_type") != "code" or _is_test_cell(cell):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if source.lstrip().startswith("%%"):
            warnings.append(f"cell {number}: a cell magic ({source.split()[0]}) is not run when grading")
            continue
        try:
            source, body = _parse_neutralising_ipython(source, f"<cell {number}>")
        except SyntaxError as exc:
            warnings.append(f"cell {number}: syntax error at line {exc.lineno}: {exc.msg}; this cell was skipped")
            continue
        keep = tuple(i for i, node in enumerate(body) if _keep(node, mode))
        if keep:
            cells.append(CodeCell(number, source, keep))
    return Extracted(tuple(cells), tuple(warnings))
