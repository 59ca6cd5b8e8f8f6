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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grading.extraction import extract
from autograder.grading.handins import (MAX_ENTRIES, SubmissionFormatError, discover, find_notebook, notebook_file,
                                        read_notebook, shown)
from autograder.similarity.fingerprints import VERSION, Print, kgrams, winnow
from autograder.similarity.normalise import DEFINITIONS, Unit, units_of_cells, units_of_module

_FENCED = re.compile(r"```(?:python|py)?\n(.*?)```", re.S)
MIN_LINE_CHARS = 12  # shorter lines (`return out`, `else:`) are too common to tell anything
_NUMBER = re.compile(r"(?<![\w.])(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?")


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
    """The distinct lines that can tell who wrote them: those with a comment (typos live there) or an odd
    constant. A line of plain code two teams share (`return logits / temperature`) is written alike by
    chance; a comment or `EPS = 3.7e-07` is not."""
    found = {line_key(line) for source in sources for line in source.splitlines()}
    return sorted(line for line in found if len(line) >= MIN_LINE_CHARS and _telling(line))


def _telling(line: str) -> bool:
    code, hashed, comment = line.partition("#")
    if hashed and code.count("'") % 2 == 0 and code.count('"') % 2 == 0 and any(c.isalpha() for c in comment):
        return True
    return any(_odd(number) for number in _NUMBER.findall(code))


def _odd(number: str) -> bool:
    """Not a number anyone would write: small integers, powers of two and ten, 127, 255, 1e-6 and the like."""
    value = float(number.replace("_", ""))
    if value == int(value):
        value = abs(int(value))
        return not (value <= 16 or value & (value - 1) == 0 or value in (127, 255) or str(value).rstrip("0") == "1")
    mantissa = f"{value:e}".split("e")[0].rstrip("0").rstrip(".")
    return mantissa not in ("1", "5", "2", "2.5")


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


@dataclass(frozen=True)
class Wanted:
    """A file to read into a document: `read(*args)` (a module-level function, so another process can run it)."""

    file: Path
    purpose: str  # what it is read for: files read for another purpose are other entries of the index
    name: str
    read: Callable[..., Document]
    args: tuple


PARALLEL_FROM = 24  # files to read before reading them in several processes pays for starting them


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

    def documents(self, wanted: list[Wanted]) -> list[Document | str]:
        """Each wanted file as a document, or why it could not be read; files not in the index (or changed
        since) are read, on every core where there are many, and added to it."""
        out: list[Document | str | None] = [None] * len(wanted)
        missing: list[tuple[int, str, os.stat_result]] = []
        for i, w in enumerate(wanted):
            info = os.stat(w.file)
            key = f"{VERSION}|{w.purpose}|{os.path.realpath(w.file)}"
            row = None if self.db is None else self.db.execute(
                "SELECT size, mtime, data FROM documents WHERE key = ?", (key,)).fetchone()
            if row and row[0] == info.st_size and row[1] == info.st_mtime_ns:
                self.reused += 1
                out[i] = Document.from_json(w.name, row[2])
            else:
                missing.append((i, key, info))
        jobs = [wanted[i] for i, _, _ in missing]
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      len(jobs) // PARALLEL_FROM)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_read, jobs, chunksize=8))
        else:
            results = [_read(w) for w in jobs]
        for (i, key, info), (ok, data) in zip(missing, results):
            self.read += ok
            out[i] = Document.from_json(wanted[i].name, data) if ok else data
            if ok and self.db is not None:
                self.db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                                (key, info.st_size, info.st_mtime_ns, data))
        return out

    def close(self) -> None:
        if self.db is not None:
            self.db.commit()
            self.db.close()


def _read(wanted: Wanted) -> tuple[bool, str]:
    """(True, the document as JSON) or (False, why the file cannot be read): plain text, whichever
    process read it."""
    try:
        return True, wanted.read(*wanted.args).to_json()
    except SubmissionFormatError as exc:
        return False, str(exc)


def handin(path: Path, notebook_name: str, graded: list[str], name: str) -> Wanted:
    """A hand-in as `grade` reads it (its one notebook, or the notebook in its .zip)."""
    found = find_notebook(path, notebook_name)
    purpose = "notebook:" + hashlib.sha256("\0".join(graded).encode()).hexdigest()[:16]
    return Wanted(found, purpose, name, _notebook_document, (found, notebook_name, graded, name))


def _notebook_document(found: Path, notebook_name: str, graded: list[str], name: str) -> Document:
    with notebook_file(found, notebook_name) as path:
        cells = [c.source for c in extract(path, mode="cells").cells]
    return document(name, units_of_cells(cells, graded), cells)


def past_handins(folders: list[Path], notebook_name: str, graded: list[str]
                 ) -> tuple[list[Wanted], list[tuple[str, str]]]:
    """Earlier years' hand-ins: each folder a batch as `grade` reads it, named `<folder>/<submission id>`."""
    wanted, problems = [], []
    for folder in folders:
        found, skipped = discover([folder])
        problems += skipped
        for sid, path in sorted(found.items()):
            name = f"{shown(folder.name)}/{sid}"
            try:
                wanted.append(handin(path, notebook_name, graded, name))
            except SubmissionFormatError as exc:
                problems.append((name, str(exc)))
    return wanted, problems


def public_files(folders: list[Path]) -> tuple[list[Wanted], list[tuple[str, str]]]:
    """Every .py and .ipynb file under the folders (links not followed), one document per file whose
    units are its functions and methods."""
    wanted, problems = [], []
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
            wanted.append(Wanted(file, "public", name, _public_document, (file, name)))
    return wanted, problems


def _public_document(file: Path, name: str) -> Document:
    if file.suffix == ".ipynb":
        module = "\n\n".join(c.source for c in extract(file, mode="cells").cells)
    else:
        module = read_notebook(file).decode("utf-8", errors="replace")
    return document(name, units_of_module(module), [module])
