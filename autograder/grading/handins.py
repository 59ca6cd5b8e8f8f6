"""Which hand-ins a path holds, and reading their bytes without trusting them.

A hand-in is a notebook, a .zip archive holding one (what `autograder pack` writes, or what a student
zipped), or a folder holding either (a team's folder of an LMS download). Archives keep
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
import decimal
import hashlib
import io
import json
import os
import stat
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

from autograder.course.gradebook import safe_text

MAX_NOTEBOOK_BYTES = 100 * 2**20
MAX_ENTRIES = 10_000  # files and folders looked at inside one hand-in
_IGNORED_INSIDE = ("__MACOSX",)  # macOS archive metadata: `._name.ipynb` copies that are no notebooks
_ARCHIVES = (".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")  # read: .zip (what `autograder pack` writes)
MANIFEST = "handin.json"  # what `autograder pack` puts next to the notebook: team, members, validation
MAX_MANIFEST_BYTES = 1 << 20


class SubmissionFormatError(Exception):
    """The submission cannot be read as a notebook; the message is meant for the student and TA."""


# The scores a folder of sample submissions must get (`verify --samples`): part of the folder, not a hand-in.
EXPECTED_SCORES = "expected.json"


class Discovery(NamedTuple):
    """What `discover` found: the hand-ins by submission id, and every other entry with the reason it
    is not graded (shown as the path, safe to print)."""

    handins: dict[str, Path]
    skipped: list[tuple[str, str]]


@contextlib.contextmanager
def format_errors(name: str):
    """Any other exception while reading `name` becomes a `SubmissionFormatError` with a neutral message:
    a failure of the grader's own code on odd input is recorded for that hand-in, not a crash of the batch.
    The message names no Python exception (students read it); the exception stays chained for the staff."""
    try:
        yield
    except SubmissionFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not stop the batch
        raise SubmissionFormatError(f"the grader could not read {shown(name)}: a fault of the grader's own code, "
                                    "not of the hand-in; please tell the course staff") from exc


def json_value(text: str | bytes):
    """JSON as a hand-in may hold it: integers of any length are read (Python refuses to convert more than
    `sys.get_int_max_str_digits()` digits to `int`; such a number is never one the grader uses, so it is
    kept as a `Decimal`, never as an `int`)."""
    return json.loads(text, parse_int=_json_int)


def _json_int(digits: str) -> int | decimal.Decimal:
    limit = sys.get_int_max_str_digits()
    return decimal.Decimal(digits) if limit and len(digits.lstrip("-")) > limit else int(digits)


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
            if entry.name == EXPECTED_SCORES and entry.is_file(follow_symlinks=False):
                continue
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
    """One notebook, or else one .zip, and no subfolders: a team's folder, not a batch."""
    folders = [e for e in entries if _visible(e) and e.is_dir(follow_symlinks=False)]
    files = [e for e in entries if _visible(e) and e.is_file(follow_symlinks=False)]
    notebooks = [e for e in files if e.name.endswith(".ipynb")]
    archives = [e for e in files if e.name.lower().endswith(".zip")]
    return not folders and (len(notebooks) == 1 or (not notebooks and len(archives) == 1))


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
    if entry.name.endswith(".ipynb") or entry.name.lower().endswith(".zip"):
        return None
    if entry.name.lower().endswith(_ARCHIVES):
        return "an archive other than .zip: unpack it into a folder of its own to grade it"
    return "not a notebook (.ipynb) or a folder"


def find_notebook(path: Path, preferred_name: str | None = None) -> Path:
    """What to grade: `path` itself (a notebook or a .zip hand-in), or the one regular .ipynb file inside
    the folder `path` (`preferred_name` where there are several), or else its one .zip. Nothing inside
    is followed; `notebook_bytes` reads what this returns."""
    path = Path(path)
    name = _name(path)
    with format_errors(name):
        mode = _mode(path, name, follow=True)  # the hand-in itself was vetted by `discover` or named by the TA
        if stat.S_ISREG(mode):
            if not path.name.endswith(".ipynb") and not path.name.lower().endswith(".zip"):
                raise SubmissionFormatError(f"{name} is not a Jupyter notebook (.ipynb): hand in the notebook "
                                            "file you worked in")
            return Path(os.path.realpath(path))
        if not stat.S_ISDIR(mode):
            raise SubmissionFormatError(f"{name} is {_kind(mode)}, not a notebook")
        folder = Path(os.path.realpath(path))
        notebooks, archives, passed_over = _notebooks_in(folder, name)
        if not notebooks and len(archives) == 1:
            return archives[0]
        return _one_of(notebooks, preferred_name, name, lambda p: shown(p.relative_to(folder)), passed_over)


def notebook_choices(path: Path) -> dict[str, Path]:
    """The files a folder hand-in could be graded from, by their path inside it: its notebooks, else its
    .zip archives (what `find_notebook` chooses among). Empty for a file or a folder that cannot be read:
    grading says why."""
    if not stat.S_ISDIR(os.lstat(path).st_mode if os.path.lexists(path) else 0):
        return {}
    folder = Path(os.path.realpath(path))
    try:
        notebooks, archives, _ = _notebooks_in(folder, _name(path))
    except SubmissionFormatError:
        return {}
    return {shown(p.relative_to(folder)): p for p in notebooks or archives}


def graded_name(path: Path, preferred_name: str | None = None) -> str:
    """The name of the file a hand-in's grade is for, as the score table and feedback page show it."""
    try:
        return shown(find_notebook(path, preferred_name).name)
    except SubmissionFormatError:
        return ""


def _one_of(notebooks: list, preferred_name: str | None, name: str, show, passed_over=(), base=lambda p: p.name):
    """The one notebook to grade among `notebooks` (paths, or archive members with their own `base`
    name), else a message saying what to hand in."""
    if preferred_name:
        notebooks = [p for p in notebooks if base(p) == preferred_name] or notebooks
    if len(notebooks) == 1:
        return notebooks[0]
    found = ", ".join(show(p) for p in notebooks)
    if notebooks:
        to_grade = f", or name the one to grade {preferred_name}" if preferred_name else ""
        raise SubmissionFormatError(f"expected exactly one notebook in {name}/, found {len(notebooks)}: {found}; "
                                    f"hand in only the notebook you worked in{to_grade}")
    why = "".join(f"; {what}" for what in passed_over)
    raise SubmissionFormatError(f"expected exactly one notebook in {name}/, found none{why}; "
                                "hand in the .ipynb file you worked in")


def _notebooks_in(folder: Path, name: str) -> tuple[list[Path], list[Path], list[str]]:
    """Regular .ipynb and .zip files under `folder` (checkpoints, hidden entries and macOS metadata aside),
    and why any other entry named .ipynb was passed over. Links are never followed; the walk is bounded."""
    notebooks, archives, passed_over, seen = [], [], [], 0
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
            elif entry.name.lower().endswith(".zip") and entry.is_file(follow_symlinks=False):
                archives.append(Path(entry.path))
            elif entry.name.endswith(".ipynb"):
                if entry.is_file(follow_symlinks=False):
                    notebooks.append(Path(entry.path))
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
                    relative = shown(Path(entry.path).relative_to(folder))
                    link = f", {_NOT_FOLLOWED}" if stat.S_ISLNK(mode) else ", not a notebook file"
                    passed_over.append(f"{relative} is {_kind(mode)}{link}")
    return sorted(notebooks), sorted(archives), passed_over


def read_notebook(notebook: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, at most `limit` (`MAX_NOTEBOOK_BYTES`); never follows a link, never
    blocks on a FIFO, never opens a device for reading."""
    notebook = Path(notebook)
    limit = limit or MAX_NOTEBOOK_BYTES
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
            data = b"" if st.st_size > limit else f.read(limit + 1)  # it may grow
        _check_size(name, max(st.st_size, len(data)), limit)
        return data


def _check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise SubmissionFormatError(
            f"{name} is {size / 2**20:.0f} MB; the grader reads notebooks up to {limit // 2**20} MB: "
            "clear the outputs (Edit > Clear All Outputs) and save it again")


def is_archive(found: Path) -> bool:
    return found.name.lower().endswith(".zip")


def notebook_bytes(found: Path, preferred_name: str | None = None) -> tuple[str, bytes]:
    """The name and bytes of the notebook `find_notebook` found, reading it out of a .zip hand-in
    (never extracted: members are read by name, capped, links and folders inside ignored)."""
    if not is_archive(found):
        return found.name, read_notebook(found)
    name = _name(found)
    with format_errors(name), _zip(found) as archive:
        members = [i for i in archive.infolist() if readable_member(i) and i.filename.endswith(".ipynb")]
        member = _one_of(members, preferred_name, name, lambda i: shown(i.filename),
                         base=lambda i: Path(i.filename).name)
        return Path(member.filename).name, _member_bytes(archive, member, name, None)


def read_manifest(found: Path) -> dict | None:
    """The `handin.json` of a packed hand-in (team, members, validation), or None for a plain notebook
    or archive. It is the student's own file: read as data, never trusted for times."""
    if not is_archive(found):
        return None
    name = _name(found)
    with format_errors(name), _zip(found) as archive:
        info = next((i for i in archive.infolist() if i.filename == MANIFEST and readable_member(i)), None)
        if info is None:
            return None
        try:
            manifest = json_value(_member_bytes(archive, info, f"{name}/{MANIFEST}", MAX_MANIFEST_BYTES))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise SubmissionFormatError(f"{name}/{MANIFEST} is not valid JSON: pack the notebook again with "
                                        "`autograder pack`") from None
        if not isinstance(manifest, dict):
            raise SubmissionFormatError(f"{name}/{MANIFEST} is not a JSON object: pack the notebook again")
        return manifest


@contextlib.contextmanager
def _zip(found: Path):
    try:
        data = read_notebook(found)  # the same guards (no link, FIFO or device; size cap) as for a notebook
    except SubmissionFormatError as exc:
        raise SubmissionFormatError(str(exc).replace("notebooks up to", "hand-ins up to")) from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if len(archive.infolist()) > MAX_ENTRIES:
                raise SubmissionFormatError(f"{_name(found)} holds more than {MAX_ENTRIES} files; hand in your "
                                            "notebook")
            yield archive
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise SubmissionFormatError(f"{_name(found)} is not a readable .zip archive: hand in the notebook "
                                    "(.ipynb) itself, or pack it with `autograder pack`") from None


def readable_member(info: zipfile.ZipInfo) -> bool:
    """A regular file inside an archive: folders, links (kept as such by zip tools), hidden entries and
    macOS metadata are not hand-in files."""
    parts = info.filename.split("/")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the tool stored no Unix type
    return (not info.is_dir() and kind in (0, stat.S_IFREG)
            and not any(p.startswith(".") or p in _IGNORED_INSIDE for p in parts))


def _member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int | None) -> bytes:
    """Decompressed bytes of one member, at most `limit` (`MAX_NOTEBOOK_BYTES`) whatever its header claims."""
    limit = limit or MAX_NOTEBOOK_BYTES
    _check_size(name, info.file_size, limit)
    try:
        with archive.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise SubmissionFormatError(f"{name} cannot be unpacked ({exc}): zip it again without a password, "
                                    "or hand in the notebook itself") from None
    _check_size(name, len(data), limit)
    return data


@contextlib.contextmanager
def notebook_file(found: Path, preferred_name: str | None = None):
    """A path to the notebook to extract: `found` itself, or a private copy of the notebook inside a
    .zip hand-in for as long as the block runs."""
    if not is_archive(found):
        yield found
        return
    name, data = notebook_bytes(found, preferred_name)
    with tempfile.TemporaryDirectory(prefix="autograder-handin-") as folder:
        copy = Path(folder) / Path(name).name
        copy.write_bytes(data)
        yield copy


def submission_hash(found: Path, preferred_name: str | None = None) -> str:
    return hashlib.sha256(notebook_bytes(found, preferred_name)[1]).hexdigest()


def submission_digest(path: Path, preferred_name: str | None = None) -> str:
    """What a rerun compares; never raises. The notebook's hash, or for a hand-in without a readable
    notebook a hash of why: it is graded again only once that reason changes."""
    try:
        return submission_hash(find_notebook(path, preferred_name), preferred_name)
    except SubmissionFormatError as exc:
        return "unreadable:" + hashlib.sha256(str(exc).encode("utf-8", "backslashreplace")).hexdigest()
