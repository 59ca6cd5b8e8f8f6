"""Stage 2: a submission notebook becomes the code that runs at grading time.

By default only imports, function and class definitions and UPPER_CASE constants run: experiments,
hub downloads, shell escapes and magics in a student's notebook must not run (or fail) while grading.
Each kept statement runs on its own in the sandbox, so one broken import does not hide the rest.
"""

from __future__ import annotations

import ast
import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.grading.handins import SubmissionFormatError, format_errors, json_value, read_notebook, shown

_IPYTHON_LINE = re.compile(r"^(\s*)[!%]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what Python counts as a new line, unlike str.splitlines
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUL = re.compile("\x00")
# The notebook's own public checks import a module that only exists next to the student's notebook.
PUBLIC_CHECKS_MODULE = "public_checks"
_KEPT_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_BLOCKS = {ast.If: "if", ast.For: "for", ast.AsyncFor: "async for", ast.While: "while", ast.With: "with",
           ast.AsyncWith: "async with", ast.Try: "try", ast.Match: "match", ast.TryStar: "try"}
WHAT_RUNS = "only top-level imports, `def`, `class` and UPPER_CASE constants do"
# Every parse of a notebook's cells counts, re-parses too: no notebook takes long to read.
MAX_CODE_CHARS = 2_000_000
_RESAVE = "hand in the notebook as Jupyter saves it (open it in Jupyter and save it again)"
_SHAPE = 'a notebook is the JSON object Jupyter saves, with a list of "cells"'


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


class _Skipped(Exception):
    """A cell that cannot run at grading time; the message says why and what to change."""


def read_cells(notebook: Path) -> list:
    """The notebook's list of cells, as plain JSON values; any other shape is a `SubmissionFormatError`
    that says what a notebook must look like."""
    return read_notebook_json(notebook)["cells"]


def read_notebook_json(notebook: Path) -> dict:
    """The notebook as plain JSON values, in format 4, with a list of cells: whatever Jupyter could have
    saved (old formats, a byte order mark, `4.0` for 4, numbers of any length) is read, anything else is a
    `SubmissionFormatError` that says what a notebook must look like."""
    name = shown(notebook.name)
    data = read_notebook(notebook)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4]:
        raise SubmissionFormatError(f"{name} is saved as UTF-16 or UTF-32 text, not UTF-8; {_RESAVE}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        if exc.reason == "unexpected end of data":  # the file stops inside a character
            raise SubmissionFormatError(_cut_off(name, line)) from None
        raise SubmissionFormatError(f"{name} is not UTF-8 text (byte {data[exc.start]:#04x} on line {line}), so "
                                    f"another program re-encoded it; {_RESAVE}") from None
    try:
        nb = json_value(text)
    except json.JSONDecodeError as exc:
        raise SubmissionFormatError(_json_problem(name, text, exc)) from None
    except RecursionError:
        raise SubmissionFormatError(f"{name} is JSON nested too deeply to be a notebook; {_SHAPE}") from None
    if not isinstance(nb, dict):
        raise SubmissionFormatError(f"{name} holds a JSON {_json_kind(nb)}, not a notebook; {_SHAPE}")
    if "nbformat" in nb:
        version = nb["nbformat"]
        if type(version) is float and version.is_integer():  # `4.0`: Jupyter's reader takes it for 4
            version = nb["nbformat"] = int(version)
        if type(version) is int and 1 <= version <= 3:
            nb = _upgraded(nb, name, version)
        elif not (type(version) is int and version == 4):
            raise SubmissionFormatError(f'{name} says it is in notebook format {shown(repr(version))[:20]}, the grader '
                                        f"reads format 4 (what Jupyter saves); {_RESAVE}")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        found = 'has no "cells"' if cells is None else f'has "cells" that are a {_json_kind(cells)}, not a list'
        raise SubmissionFormatError(f"{name} is JSON but not a notebook: it {found}; {_SHAPE}")
    return nb


def _json_problem(name: str, text: str, exc: json.JSONDecodeError) -> str:
    """A file cut off stops where the parser fails, or within the few characters of a value it was
    writing (`tr` of `true`, `\\u00` of an escape); an edited file fails before its end."""
    stripped = text.rstrip()
    rest = text[exc.pos:].rstrip()
    where = f"line {exc.lineno}, column {exc.colno}"
    if not stripped:
        return f"{name} is empty: save the notebook in Jupyter before handing it in"
    if exc.msg == "Extra data":
        return f"{name} has more text after the end of the notebook (from {where}); {_RESAVE}"
    if exc.msg.startswith("Unterminated string") or (len(rest) < 6 and not any(c in rest for c in "]}")):
        return _cut_off(name, stripped.count("\n") + 1)
    return f"{name} is not valid JSON ({exc.msg} at {where}), as if it was edited as text; {_RESAVE}"


def _cut_off(name: str, last_line: int) -> str:
    return (f"{name} is cut off: its JSON ends in the middle (line {last_line}); hand in the complete file "
            "(was it saved or uploaded completely?)")


def _json_kind(value) -> str:
    kinds = {dict: "object", list: "list", str: "string", bool: "true/false value", int: "number", float: "number"}
    return kinds.get(type(value), "null")


def _upgraded(nb: dict, name: str, version: int) -> dict:
    """A notebook saved by Jupyter before 2015, in today's format (nbformat knows every old one)."""
    try:
        return nbformat.convert(nbformat.from_dict(nb), 4)
    except Exception:  # noqa: BLE001 - nbformat fails in assorted ways on malformed old notebooks
        raise SubmissionFormatError(f"{name} is an old notebook (format {version}) that could not be converted; "
                                    f"{_RESAVE}") from None


def _is_test_cell(cell: dict) -> bool:
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return isinstance(meta, dict) and meta.get("grade") is True and meta.get("solution") is not True


def _code_of(cell) -> str | None:
    """The source of a code cell that may run at grading time; None for other cells."""
    if not isinstance(cell, dict):
        raise _Skipped('it is not a notebook cell (a JSON object with "cell_type" and "source")')
    if cell.get("cell_type") in ("markdown", "raw"):
        return None
    if cell.get("cell_type") != "code":
        raise _Skipped('its "cell_type" is not "code", "markdown" or "raw"')
    if _is_test_cell(cell):
        return None
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    if isinstance(source, str):
        return source
    raise _Skipped('its "source" is not text (a string or a list of strings)')


def _check_characters(source: str) -> None:
    """Python reads neither lone surrogates (half of a character, e.g. from a broken copy and paste)
    nor NUL characters; say where they are instead of failing on them."""
    for found in (_SURROGATE.search(source), _NUL.search(source)):
        if found:
            line = len(_LINE_BREAK.findall(source, 0, found.start())) + 1
            escaped = found.group().encode("utf-8", "backslashreplace").decode()
            what = "a NUL character" if found.group() == "\x00" else f"a broken character (half of one, {escaped})"
            raise _Skipped(f"line {line} holds {what}, which Python cannot read: delete or retype it")


class _CodeBudget:
    """Characters of code left to parse in this notebook."""

    def __init__(self):
        self.left = MAX_CODE_CHARS

    def parse(self, source: str, filename: str) -> list[ast.stmt]:
        if len(source) > self.left:
            raise _Skipped(f"the notebook holds more code than the grader reads ({MAX_CODE_CHARS:,} characters): "
                           "keep data in files, not in code cells")
        self.left -= len(source)
        try:
            return ast.parse(source, filename=filename).body
        except (RecursionError, MemoryError):
            raise _Skipped("it is nested too deeply for Python to read: split long expressions into several "
                           "statements") from None


def _parse_neutralising_ipython(source: str, filename: str, budget: _CodeBudget) -> tuple[str, list[ast.stmt]]:
    """Parse a cell; each `!pip install x` or `%timeit f()` line the parser trips over becomes `pass`
    (same indentation, same line numbers). Lines inside string literals never trip it, so they stay."""
    lines = None
    while True:
        try:
            return source, budget.parse(source, filename)
        except SyntaxError as exc:
            lines = lines or _LINE_BREAK.split(source)
            index = (exc.lineno or 0) - 1
            if not (0 <= index < len(lines)) or not _IPYTHON_LINE.match(lines[index]):
                raise
            lines[index] = _IPYTHON_LINE.sub(r"\1pass  # ", lines[index])
            source = "\n".join(lines)


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
    """Read `notebook` and keep what runs at grading time. A cell that cannot run becomes a warning;
    a file that is no notebook, or any failure of ours on it, a `SubmissionFormatError`."""
    notebook = Path(notebook)
    with format_errors(notebook.name):
        cells, warnings, parsed = [], [], []
        budget = _CodeBudget()
        for number, cell in enumerate(read_cells(notebook), start=1):
            try:
                source = _code_of(cell)
                if source is None:
                    continue
                if source.lstrip().startswith("%%"):
                    warnings.append(f"cell {number}: a cell magic ({source.split()[0][:40]}) is not run when grading")
                    continue
                _check_characters(source)
                source, body = _parse_neutralising_ipython(source, f"<cell {number}>", budget)
            except SyntaxError as exc:
                at = f" at line {exc.lineno}" if exc.lineno else ""
                warnings.append(f"cell {number}: syntax error{at}: {exc.msg}; this cell was skipped")
                continue
            except _Skipped as skipped:
                warnings.append(f"cell {number}: {skipped}; this cell was skipped")
                continue
            keep = tuple(i for i, node in enumerate(body) if _keep(node, mode))
            if keep:
                cells.append(CodeCell(number, source, keep))
            parsed.append((number, body, keep))
        if mode == "definitions":
            warnings += _definitions_that_do_not_run(parsed)
        return Extracted(tuple(cells), tuple(warnings))


def _definitions_that_do_not_run(parsed: list[tuple[int, list[ast.stmt], tuple[int, ...]]]) -> list[str]:
    """Functions a student defined where they do not run at grading time: inside an `if`/`try`/... block,
    or as a lowercase alias (`f = g`, `f = lambda ...`). Without this the student only learns that the
    function "is not defined"."""
    kept = set()
    for _, body, keep in parsed:
        for i in keep:
            kept.update(bound_names(body[i]))
    hints: dict[str, str] = {}
    for number, body, keep in parsed:
        for node in (node for i, node in enumerate(body) if i not in keep):
            for name, line, what, fix in _unrun_definitions(node, kept):
                if name not in kept:
                    hints.setdefault(name, f"cell {number}, line {line}: {what} does not run when grading "
                                           f"({WHAT_RUNS}): {fix}")
    return list(hints.values())


def bound_names(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds (definitions, imports, assignments)."""
    if isinstance(node, _DEFINITIONS):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _unrun_definitions(node: ast.stmt, kept: set[str]):
    """(name, line, what, how to fix it) for each definition in a top-level statement that is not kept."""
    if type(node) in _BLOCKS:
        for definition in _defined_in_block(node):
            keyword = "class" if isinstance(definition, ast.ClassDef) else "def"
            yield (definition.name, definition.lineno,
                   f"`{definition.name}`, defined inside the `{_BLOCKS[type(node)]}` block of line {node.lineno},",
                   f"move `{keyword} {definition.name}` out of the block, to the top level of a cell (no indentation)")
    elif isinstance(node, ast.Assign) and (
            isinstance(node.value, ast.Lambda) or (isinstance(node.value, ast.Name) and node.value.id in kept)):
        for target in node.targets:
            if isinstance(target, ast.Name):
                yield (target.id, node.lineno, f"`{ast.unparse(node)[:60]}`",
                       f"write `def {target.id}(...):` at the top level of a cell instead")


def _defined_in_block(block: ast.stmt):
    bodies = [getattr(block, part, []) for part in ("body", "orelse", "finalbody")]
    bodies += [handler.body for handler in getattr(block, "handlers", [])]
    bodies += [case.body for case in getattr(block, "cases", [])]
    for statement in (statement for body in bodies for statement in body):
        if isinstance(statement, _DEFINITIONS):
            yield statement
        elif type(statement) in _BLOCKS:
            yield from _defined_in_block(statement)


def imported_names(nodes) -> dict[str, str]:
    """Name -> the dotted path the top-level statements `nodes` import it as (`F` -> `torch.nn.functional`)."""
    names = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update({(a.asname or a.name.split(".")[0]): (a.name if a.asname else a.name.split(".")[0])
                          for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names})
    return names


def dotted_name(node: ast.AST) -> list[str] | None:
    """`torch.nn.functional.softmax` as its parts; None for anything but names and attributes of names."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None
