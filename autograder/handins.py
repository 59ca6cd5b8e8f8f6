"""Which hand-ins a path holds, and reading their bytes without trusting them.

A hand-in is a notebook, or a folder holding one (a team's folder of an LMS download). Archives keep
symbolic links, FIFOs and device files, so inside a batch or a hand-in nothing is followed or opened
unless it is a regular file, and reads are capped: a link to the instructor's solution, to /dev/zero
or to another team's notebook, or a FIFO named like the notebook, becomes a message, never a grade,
a hang or an exhausted memory. Paths the TA names on the command line are the TA's own and may be
links.

Every failure to read a hand-in is a `SubmissionFormatError` whose message tells the student what
to hand in; anything unexpected on odd input becomes one too (`format_errors`), so the grader records
it instead of crashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

from autograder.gradebook import safe_text

MAX_NOTEBOOK_BYTES = 100 * 2**20
MAX_ENTRIES = 10_000  # files and folders looked at inside one hand-in
_IGNORED_INSIDE = ("__MACOSX",)  # macOS archive metadata: `._name.ipynb` copies that are no notebooks
_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")


class SubmissionFormatError(Exception):
    """The submission cannot be read as a notebook; the message is meant for the student and TA."""


class Discovery(NamedTuple):
    """What `discover` found: the hand-ins by submission id, and every other entry with the reason it
    is not graded (shown as the path, safe to print)."""

    handins: dict[str, Path]
    skipped: list[tuple[str, str]]


@contextlib.contextmanager
def format_errors(name: str):
    """Any other exception while reading `name` becomes a `SubmissionFormatError` with a neutral message:
    a failure of the grader's own code on odd input is recorded for that hand-in, not a crash of the batch."""
    try:
        yield
    except SubmissionFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not stop the batch
        detail = safe_text(f"{type(exc).__name__}: {exc}")[:200]
        raise SubmissionFormatError(f"the grader could not read {shown(name)} (internal error: {detail}); "
                                    "please tell the course staff") from exc


def shown(path: str | os.PathLike) -> str:
    """A path or name as messages show it: valid Unicode whatever its bytes."""
    return safe_text(os.fspath(path))


def _name(path: Path) -> str:
    return shown(os.path.basename(os.path.abspath(path)))


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a regular file"


_NOT_FOLLOWED = "which the grader does not follow: hand in the notebook file itself"


def discover(paths: list[Path]) -> Discovery:
    """Submission id -> path, and what is skipped and why.

    A folder with one notebook and no subfolders is one hand-in (an LMS folder per team); any other
    folder is a batch whose notebooks and subfolders are the hand-ins. Hidden entries, loose files,
    links, FIFOs and devices of a batch are skipped and named; so is a second hand-in with an id
    already taken. A path that does not exist is the TA's mistake: `SubmissionFormatError`.
    """
    handins: dict[str, Path] = {}
    skipped: list[tuple[str, str]] = []

    def add(sid: str, path: Path) -> None:
        sid = safe_text(sid)
        if sid in handins:
            skipped.append((shown(path), f"its submission id `{sid}` is taken by {shown(handins[sid])}; "
                                         "rename one of them"))
        else:
            handins[sid] = path

    for path in map(Path, paths):
        if not stat.S_ISDIR(_mode(path, shown(path), follow=True)):
            add(Path(_name(path)).stem, path)
            continue
        entries = _entries(path, shown(path))
        if _is_one_handin(entries):
            add(_name(path), path)
            continue
        for entry in entries:
            reason = _not_a_handin(entry)
            if reason:
                skipped.append((shown(entry.path), reason))
            else:
                add(entry.name if entry.is_dir(follow_symlinks=False) else Path(entry.name).stem, Path(entry.path))
    return Discovery(handins, skipped)


def _mode(path: Path, name: str, *, follow: bool) -> int:
    """The type bits of `path`; one that is missing or unreadable is a format error naming it."""
    try:
        return (os.stat if follow else os.lstat)(path).st_mode
    except FileNotFoundError:
        raise SubmissionFormatError(f"{name} does not exist") from None
    except OSError as exc:
        raise SubmissionFormatError(f"{name} cannot be read ({exc.strerror})") from None


def _entries(folder: Path, name: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        raise SubmissionFormatError(f"{name} cannot be read ({exc.strerror})") from None


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def _is_one_handin(entries: list[os.DirEntry]) -> bool:
    folders = [e for e in entries if _visible(e) and e.is_dir(follow_symlinks=False)]
    notebooks = [e for e in entries if _visible(e) and e.name.endswith(".ipynb") and e.is_file(follow_symlinks=False)]
    return not folders and len(notebooks) == 1


def _not_a_handin(entry: os.DirEntry) -> str | None:
    """Why an entry of a batch folder is not graded, or None for a hand-in."""
    mode = entry.stat(follow_symlinks=False).st_mode
    if not _visible(entry):
        return f"hidden: {_kind(mode)} whose name starts with a dot"
    if stat.S_ISLNK(mode):
        return (f"a symbolic link to {shown(os.readlink(entry.path))}, which is never followed: "
                "copy the notebook or folder itself here to grade it")
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        return f"not a notebook but {_kind(mode)}"
    if entry.name.endswith(".ipynb"):
        return None
    if entry.name.lower().endswith(_ARCHIVES):
        return "an archive: unpack it into a folder of its own to grade it"
    return "not a notebook (.ipynb) or a folder"


def find_notebook(path: Path, preferred_name: str | None = None) -> Path:
    """The notebook to grade: `path` itself, or the one regular .ipynb file inside the folder `path`
    (`preferred_name` where there are several). Nothing inside is followed."""
    path = Path(path)
    name = _name(path)
    with format_errors(name):
        mode = _mode(path, name, follow=True)  # the hand-in itself was vetted by `discover` or named by the TA
        if stat.S_ISREG(mode):
            if not path.name.endswith(".ipynb"):
                raise SubmissionFormatError(f"{name} is not a Jupyter notebook (.ipynb): hand in the notebook "
                                            "file you worked in")
            return Path(os.path.realpath(path))
        if not stat.S_ISDIR(mode):
            raise SubmissionFormatError(f"{name} is {_kind(mode)}, not a notebook")
        folder = Path(os.path.realpath(path))
        notebooks, passed_over = _notebooks_in(folder, name)
        if preferred_name:
            notebooks = [p for p in notebooks if p.name == preferred_name] or notebooks
        if len(notebooks) == 1:
            return notebooks[0]
        found = ", ".join(shown(p.relative_to(folder)) for p in notebooks)
        if notebooks:
            to_grade = f", or name the one to grade {preferred_name}" if preferred_name else ""
            raise SubmissionFormatError(f"expected exactly one notebook in {name}/, found {len(notebooks)}: {found}; "
                                        f"hand in only the notebook you worked in{to_grade}")
        why = "".join(f"; {what}" for what in passed_over)
        raise SubmissionFormatError(f"expected exactly one notebook in {name}/, found none{why}; "
                                    "hand in the .ipynb file you worked in")


def _notebooks_in(folder: Path, name: str) -> tuple[list[Path], list[str]]:
    """Regular .ipynb files under `folder` (checkpoints, hidden entries and macOS metadata aside), and
    why any other entry named .ipynb was passed over. Links are never followed; the walk is bounded."""
    notebooks, passed_over, seen = [], [], 0
    pending = [folder]
    while pending:
        current = pending.pop()
        entries = _entries(current, shown(Path(name) / current.relative_to(folder)))
        seen += len(entries)
        if seen > MAX_ENTRIES:
            raise SubmissionFormatError(f"{name}/ holds more than {MAX_ENTRIES} files and folders; "
                                        "hand in your notebook, not a whole disk")
        for entry in entries:
            if entry.name.startswith(".") or entry.name in _IGNORED_INSIDE:
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.name.endswith(".ipynb"):
                if entry.is_file(follow_symlinks=False):
                    notebooks.append(Path(entry.path))
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    relative = shown(Path(entry.path).relative_to(folder))
                    link = f", {_NOT_FOLLOWED}" if stat.S_ISLNK(mode) else ", not a notebook file"
                    passed_over.append(f"{relative} is {_kind(mode)}{link}")
    return sorted(notebooks), passed_over


def read_notebook(notebook: Path) -> bytes:
    """The bytes of a regular file, at most `MAX_NOTEBOOK_BYTES`; never follows a link, never blocks
    on a FIFO, never opens a device for reading."""
    notebook = Path(notebook)
    name = _name(notebook)
    with format_errors(name):
        mode = _mode(notebook, name, follow=False)
        if stat.S_ISLNK(mode):
            raise SubmissionFormatError(f"{name} is a symbolic link, {_NOT_FOLLOWED}")
        if not stat.S_ISREG(mode):
            raise SubmissionFormatError(f"{name} is {_kind(mode)}, not a notebook file")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(notebook, flags)
        except OSError as exc:
            raise SubmissionFormatError(f"{name} cannot be read ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)  # what was opened, should the path have changed since lstat
            if not stat.S_ISREG(st.st_mode):
                raise SubmissionFormatError(f"{name} is {_kind(st.st_mode)}, not a notebook file")
            data = b"" if st.st_size > MAX_NOTEBOOK_BYTES else f.read(MAX_NOTEBOOK_BYTES + 1)  # it may grow
        size = max(st.st_size, len(data))
        if size > MAX_NOTEBOOK_BYTES:
            raise SubmissionFormatError(
                f"{name} is {size / 2**20:.0f} MB; the grader reads notebooks up to {MAX_NOTEBOOK_BYTES // 2**20} MB: "
                "clear the outputs (Edit > Clear All Outputs) and save it again")
        return data


def submission_hash(notebook: Path) -> str:
    return hashlib.sha256(read_notebook(notebook)).hexdigest()


def submission_digest(path: Path, preferred_name: str | None = None) -> str:
    """What a rerun compares; never raises. The notebook's hash, or for a hand-in without a readable
    notebook a hash of why: it is graded again only once that reason changes."""
    try:
        return submission_hash(find_notebook(path, preferred_name))
    except SubmissionFormatError as exc:
        return "unreadable:" + hashlib.sha256(str(exc).encode("utf-8", "backslashreplace")).hexdigest()
