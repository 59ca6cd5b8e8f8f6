"""What is compared: hand-ins as `grade` reads them, earlier years' hand-ins, public code, and the
template every team got (the release notebook's code, the code shown in its text, the public checks).

Reading a notebook into fingerprints is the slow part, so each file's result is kept in an index
(SQLite) keyed by its path, size and modification time: thousands of past hand-ins are read once.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grading.extraction import extract
from autograder.grading.handins import (MAX_ENTRIES, SubmissionFormatError, discover, find_notebook, notebook_file,
                                        read_notebook, shown)
from autograder.similarity.fingerprints import VERSION, Print, kgrams, winnow
from autograder.similarity.normalise import DEFINITIONS, Unit, units_of_cells, units_of_module

_FENCED = re.compile(r"```(?:python|py)?\n(.*?)```", re.S)
MIN_LINE_CHARS = 12  # shorter lines (`return out`, `else:`) are too common to tell anything


@dataclass
class Part:
    """One unit of a document: its code as written and its fingerprints."""

    text: str
    prints: list[Print]


@dataclass
class Document:
    name: str
    parts: dict[str, Part] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # its code's lines, whitespace collapsed (rare lines)

    def to_json(self) -> str:
        return json.dumps({"parts": {u: [p.text, [list(x) for x in p.prints]] for u, p in self.parts.items()},
                           "lines": self.lines})

    @classmethod
    def from_json(cls, name: str, data: str) -> Document:
        raw = json.loads(data)
        return cls(name, {u: Part(text, [Print(*x) for x in prints]) for u, (text, prints) in raw["parts"].items()},
                   raw["lines"])


@dataclass
class Template:
    """What every team got: k-gram hashes (all of them, not only the winnowed) and lines."""

    hashes: set[int]
    lines: set[str]


def line_key(line: str) -> str:
    return " ".join(line.split())


def code_lines(sources: list[str]) -> list[str]:
    """The distinct lines worth comparing as text (comments, typos, odd constants live there)."""
    found = {line_key(line) for source in sources for line in source.splitlines()}
    return sorted(line for line in found if len(line) >= MIN_LINE_CHARS and any(c.isalnum() for c in line))


def document(name: str, units: list[Unit], sources: list[str]) -> Document:
    return Document(name, {u.name: Part(u.text, [p for tokens, lines in u.streams for p in winnow(tokens, lines)])
                           for u in units}, code_lines(sources))


def graded_names(release_notebook: Path) -> list[str]:
    """The graded functions and classes, in notebook order: from the release's own metadata, else the
    definitions of its answer cells."""
    nb = json.loads(release_notebook.read_text(encoding="utf-8"))
    graded = nb.get("metadata", {}).get("autograder", {}).get("graded")
    if graded is not None:
        return [name for task in graded.values() for name in task if "." not in name]
    answers = ["".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "code"
               and c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    return [n.name for source in answers for n in ast.parse(source).body if isinstance(n, DEFINITIONS)]


def release_template(release_dir: Path, notebook_name: str, graded: list[str]) -> Template:
    notebook = release_dir / notebook_name
    cells = [c.source for c in extract(notebook, mode="cells").cells]
    text = [block for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            if cell.get("cell_type") == "markdown" for block in _FENCED.findall("".join(cell.get("source", "")))]
    modules = [p.read_text(encoding="utf-8") for p in sorted(release_dir.glob("*.py"))]
    units = units_of_cells(cells + text, graded) + [u for m in modules for u in units_of_module(m)]
    units += units_of_cells(modules, [])  # their top-level code too
    hashes = {h for u in units for tokens, _ in u.streams for h in kgrams(tokens)}
    return Template(hashes, set(code_lines(cells + text + modules)))


class Index:
    """Documents already read, by file (path, size, modification time) and what they were read for."""

    def __init__(self, path: Path | None):
        self.db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path)
            self.db.execute("CREATE TABLE IF NOT EXISTS documents (key TEXT PRIMARY KEY, size INTEGER, "
                            "mtime INTEGER, data TEXT)")
        self.read = self.reused = 0

    def get(self, file: Path, purpose: str, name: str, make) -> Document:
        info = os.stat(file)
        key = f"{VERSION}|{purpose}|{os.path.realpath(file)}"
        if self.db is not None:
            row = self.db.execute("SELECT size, mtime, data FROM documents WHERE key = ?", (key,)).fetchone()
            if row and row[0] == info.st_size and row[1] == info.st_mtime_ns:
                self.reused += 1
                return Document.from_json(name, row[2])
        doc = make()
        doc.name = name
        self.read += 1
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                            (key, info.st_size, info.st_mtime_ns, doc.to_json()))
        return doc

    def close(self) -> None:
        if self.db is not None:
            self.db.commit()
            self.db.close()


def notebook_document(handin: Path, notebook_name: str, graded: list[str], index: Index, name: str) -> Document:
    """A hand-in as `grade` reads it (its one notebook, or the notebook in its .zip), as a document."""
    found = find_notebook(handin, notebook_name)
    purpose = "notebook:" + hashlib.sha256("\0".join(graded).encode()).hexdigest()[:16]

    def make() -> Document:
        with notebook_file(found, notebook_name) as path:
            cells = [c.source for c in extract(path, mode="cells").cells]
        return document(name, units_of_cells(cells, graded), cells)

    return index.get(found, purpose, name, make)


def past_documents(folders: list[Path], notebook_name: str, graded: list[str], index: Index
                   ) -> tuple[list[Document], list[tuple[str, str]]]:
    """Earlier years' hand-ins: each folder a batch as `grade` reads it, named `<folder>/<submission id>`."""
    docs, problems = [], []
    for folder in folders:
        found, skipped = discover([folder])
        problems += skipped
        for sid, path in sorted(found.items()):
            name = f"{shown(folder.name)}/{sid}"
            try:
                docs.append(notebook_document(path, notebook_name, graded, index, name))
            except SubmissionFormatError as exc:
                problems.append((name, str(exc)))
    return docs, problems


def public_documents(folders: list[Path], index: Index) -> tuple[list[Document], list[tuple[str, str]]]:
    """Every .py and .ipynb file under the folders (links not followed), one document per file whose
    units are its functions and methods."""
    docs, problems = [], []
    for folder in folders:
        if not folder.is_dir():
            raise SubmissionFormatError(f"--public {shown(folder)}: not a folder")
        files = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(root) / n for n in sorted(names) if n.endswith((".py", ".ipynb"))]
            if len(files) > MAX_ENTRIES:
                raise SubmissionFormatError(f"--public {shown(folder)} holds more than {MAX_ENTRIES} code files")
        for file in files:
            name = shown(file.relative_to(folder.parent))
            if not stat.S_ISREG(os.lstat(file).st_mode):
                problems.append((name, "not a regular file (links are not followed)"))
                continue
            try:
                docs.append(index.get(file, "public", name, lambda: _public_document(file, name)))
            except SubmissionFormatError as exc:
                problems.append((name, str(exc)))
    return docs, problems


def _public_document(file: Path, name: str) -> Document:
    if file.suffix == ".ipynb":
        module = "\n\n".join(c.source for c in extract(file, mode="cells").cells)
    else:
        module = read_notebook(file).decode("utf-8", errors="replace")
    return document(name, units_of_module(module), [module])
