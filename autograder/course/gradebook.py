"""The gradebook: every test result of every submission, in one SQLite file.

Each submission is stored with the hashes of its notebook and of the hidden suite and the grader
version, so a rerun skips what is already graded and a changed suite triggers a regrade. A
submission is written in one transaction: a killed batch never leaves half a submission behind.
WAL journaling and a busy timeout let parallel grading workers write to the same file.

A file that is not ours (another program's SQLite database, a corrupt file, a CSV given by mistake)
is refused with a `GradebookError` and never written to.

Text is stored as valid Unicode (`safe_text`): a folder name with bytes that are not UTF-8 or a
student's exception message with a broken character is kept, escaped, instead of failing the write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_PATH = Path("gradebook.db")
APPLICATION_ID = 0x41475244  # "AGRD" in the SQLite header marks a file as our gradebook
SCHEMA_VERSION = 3  # 2 added `handins` (who, when) and `manual_scores` (reflections graded by hand); 3 a hand-in's
# own due date (an extension the LMS granted)
BUSY_TIMEOUT_S = 30.0  # how long a worker waits for another worker's write to finish

# "graded-by-hand" and "needs-grading" are hand-graded cells, added by `manual.with_manual_scores`, never stored here.
TEST_STATUSES = ("passed", "failed", "error", "timeout", "needs-gpu", "graded-by-hand", "needs-grading")
SUBMISSION_STATUSES = ("graded", "error")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100
_TABLES = {"submissions", "results", "handins", "manual_scores"}
_TABLES_OF_VERSION = {1: {"submissions", "results"}, 2: _TABLES, 3: _TABLES}
_SCHEMA = (
    """CREATE TABLE submissions (
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        path            TEXT NOT NULL,
        submission_hash TEXT NOT NULL,
        suite_hash      TEXT NOT NULL,
        grader_version  TEXT NOT NULL,
        device          TEXT NOT NULL,
        status          TEXT NOT NULL,
        message         TEXT NOT NULL,
        load_messages   TEXT NOT NULL,
        incomplete      INTEGER NOT NULL,
        graded_at       TEXT NOT NULL,
        submitted_at    TEXT,
        PRIMARY KEY (assignment, submission_id)
    )""",
    """CREATE TABLE results (
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        position        INTEGER NOT NULL,
        test_id         TEXT NOT NULL,
        question        TEXT NOT NULL,
        status          TEXT NOT NULL,
        points_earned   REAL NOT NULL,
        points_possible REAL NOT NULL,
        message         TEXT NOT NULL,
        duration_s      REAL NOT NULL,
        PRIMARY KEY (assignment, submission_id, test_id),
        FOREIGN KEY (assignment, submission_id) REFERENCES submissions ON DELETE CASCADE
    )""",
)
# Kept apart from the grade, so a regrade (which replaces a submission's row) never loses them.
_SCHEMA_2 = (
    """CREATE TABLE handins (
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        team            TEXT,
        members         TEXT NOT NULL,
        submitted_at    TEXT,
        notes           TEXT NOT NULL,
        PRIMARY KEY (assignment, submission_id)
    )""",
    """CREATE TABLE manual_scores (
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        grade_id        TEXT NOT NULL,
        points          REAL NOT NULL,
        points_possible REAL NOT NULL,
        comment         TEXT NOT NULL,
        grader          TEXT NOT NULL,
        graded_at       TEXT NOT NULL,
        PRIMARY KEY (assignment, submission_id, grade_id)
    )""",
)
_SCHEMA_3 = ("ALTER TABLE handins ADD COLUMN due_at TEXT",)
# What brings a gradebook of the version before each key to that version; a new file runs them all.
_UPGRADES = {2: _SCHEMA_2, 3: _SCHEMA_3}


def safe_text(text: str) -> str:
    """`text` with its lone surrogates escaped: bytes of a file name that are not UTF-8 become `\\xff`,
    other broken characters `\\ud800`. SQLite, CSV files, web pages and terminals take only valid
    Unicode, and a hand-in's name or a student's message may hold anything."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from undecodable bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storable(values) -> list:
    """Row or query values as stored: an id with a broken character finds its escaped row."""
    return [safe_text(v) if isinstance(v, str) else v for v in values]


class GradebookError(Exception):
    """The gradebook file cannot be used; the message names the file and what to do."""


@dataclass
class TestResult:
    """The verdict of one hidden test (a pytest node id) on one submission."""

    __test__ = False  # not a pytest test class, despite its name

    test_id: str
    question: str
    status: str
    points_earned: float
    points_possible: float
    message: str
    duration_s: float

    def __post_init__(self):
        if self.status not in TEST_STATUSES:
            raise ValueError(f"{self.test_id}: unknown test status {self.status!r} (one of {TEST_STATUSES})")
        if not 0 <= self.points_earned <= self.points_possible:
            raise ValueError(f"{self.test_id}: points earned {self.points_earned} outside 0..{self.points_possible}")


@dataclass
class SubmissionResult:
    """One graded submission; `status` is "error" when its notebook could not be read at all."""

    assignment: str
    submission_id: str
    path: str
    submission_hash: str
    suite_hash: str
    grader_version: str
    device: str
    status: str
    message: str
    results: list[TestResult]
    graded_at: dt.datetime
    submitted_at: dt.datetime | None = None
    load_messages: str = ""  # e.g. extraction warnings, shown on the feedback page
    stages: dict = field(default_factory=dict, compare=False)  # seconds per grading stage; never stored
    due: dt.datetime | None = None  # this hand-in's own due date (an extension), from its hand-in record

    def __post_init__(self):
        who = f"{self.assignment}/{self.submission_id}"
        if self.status not in SUBMISSION_STATUSES:
            raise ValueError(f"{who}: unknown submission status {self.status!r} (one of {SUBMISSION_STATUSES})")
        if self.status == "error" and not self.message:
            raise ValueError(f"{who}: an error needs a message saying why the notebook could not be graded")
        # Naive times cannot be compared with the zoned due date of the late policy.
        for name in ("graded_at", "submitted_at", "due"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{who}: {name} {value} has no time zone")
        duplicates = sorted(t for t, n in Counter(r.test_id for r in self.results).items() if n > 1)
        if duplicates:
            raise ValueError(f"{who}: test ids reported more than once: {duplicates}")

    @property
    def earned(self) -> float:
        return sum(r.points_earned for r in self.results)

    @property
    def possible(self) -> float:
        return sum(r.points_possible for r in self.results)

    @property
    def incomplete(self) -> bool:
        """Points wait for a GPU runner (or a grader's reading): the grade is partial, never a zero. Checks
        worth no points (feedback only) leave a grade complete."""
        return any(r.status in ("needs-gpu", "needs-grading") and r.points_possible > 0 for r in self.results)

    def per_question(self) -> dict[str, tuple[float, float]]:
        """question -> (earned, possible), questions in the order the tests reported them."""
        totals: dict[str, tuple[float, float]] = {}
        for r in self.results:
            earned, possible = totals.get(r.question, (0.0, 0.0))
            totals[r.question] = (earned + r.points_earned, possible + r.points_possible)
        return totals


_RESULT_FIELDS = [f.name for f in fields(TestResult)]


@dataclass(frozen=True)
class ManualScore:
    """Points a grader gave one hand-graded cell (a reflection) of one submission."""

    submission_id: str
    grade_id: str
    points: float
    points_possible: float
    comment: str
    grader: str
    graded_at: dt.datetime


@dataclass(frozen=True)
class HandinRecord:
    """Who handed a submission in and when, as far as the roster and the LMS say."""

    submission_id: str
    team: str | None
    members: tuple[str, ...]
    submitted_at: dt.datetime | None
    notes: str
    due: dt.datetime | None = None  # an extension the LMS (or the TA) granted: this hand-in's own due date


class Gradebook:
    """An open gradebook file; get one from `Gradebook.open`, use it as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path = DEFAULT_PATH) -> Gradebook:
        """Open the gradebook at `path`, creating it (and its folder) if it does not exist."""
        path = Path(path)
        _check_header(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            with _transaction(conn, "IMMEDIATE"):  # two workers creating the same new file: one wins
                _create_or_check_schema(conn, path)
            # After creation, so the application id is in the main file before any WAL frame.
            conn.execute("PRAGMA journal_mode = WAL")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise _refused(path, f"SQLite cannot read it ({exc})") from exc
            raise
        return cls(conn, path)

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def is_current(
        self, assignment: str, submission_id: str, submission_hash: str, suite_hash: str, grader_version: str,
        *, gpu_runner: bool = False,
    ) -> bool:
        """True when this notebook was already graded by this suite and grader version.

        An incomplete grade (GPU tests not run) is current on a CPU grader, which could not do more,
        but not on a GPU runner, so a rerun there completes it.
        """
        row = self._conn.execute(
            "SELECT incomplete FROM submissions WHERE assignment = ? AND submission_id = ? AND submission_hash = ?"
            " AND suite_hash = ? AND grader_version = ?",
            _storable((assignment, submission_id, submission_hash, suite_hash, grader_version)),
        ).fetchone()
        return row is not None and not (row[0] and gpu_runner)

    def record(self, sub: SubmissionResult) -> None:
        """Store `sub`, replacing any earlier grade of that submission, all or nothing."""
        row = {f.name: getattr(sub, f.name) for f in fields(sub) if f.name not in ("results", "stages", "due")}
        row.update(
            graded_at=_utc_text(sub.graded_at),
            submitted_at=_utc_or_none(sub.submitted_at),
            incomplete=sub.incomplete,
        )
        result_columns = ["assignment", "submission_id", "position", *_RESULT_FIELDS]
        result_rows = [
            _storable((sub.assignment, sub.submission_id, position, *(getattr(r, name) for name in _RESULT_FIELDS)))
            for position, r in enumerate(sub.results)
        ]
        with _transaction(self._conn, "IMMEDIATE"):
            self._conn.execute(  # its old results go too (ON DELETE CASCADE)
                "DELETE FROM submissions WHERE assignment = ? AND submission_id = ?",
                _storable((sub.assignment, sub.submission_id)),
            )
            self._conn.execute(_insert_sql("submissions", list(row)), _storable(row.values()))
            self._conn.executemany(_insert_sql("results", result_columns), result_rows)

    def record_handin(self, assignment: str, record: HandinRecord) -> None:
        """Store who and when for one submission (replacing an earlier record); its grade is untouched."""
        row = (assignment, record.submission_id, record.team, json.dumps(list(record.members)),
               _utc_or_none(record.submitted_at), record.notes, _utc_or_none(record.due))
        with _transaction(self._conn, "IMMEDIATE"):
            self._conn.execute("INSERT OR REPLACE INTO handins (assignment, submission_id, team, members, submitted_at, "
                               "notes, due_at) VALUES (?, ?, ?, ?, ?, ?, ?)", _storable(row))

    def handins(self, assignment: str) -> dict[str, HandinRecord]:
        rows = self._conn.execute("SELECT * FROM handins WHERE assignment = ?", _storable((assignment,))).fetchall()
        return {r["submission_id"]: HandinRecord(
            r["submission_id"], r["team"], tuple(json.loads(r["members"])), _time_or_none(r["submitted_at"]),
            r["notes"], _time_or_none(r["due_at"])) for r in rows}

    def record_manual(self, assignment: str, scores: list[ManualScore]) -> None:
        """Store hand-given points, all or none; a later score of the same cell replaces the earlier one."""
        rows = [_storable((assignment, m.submission_id, m.grade_id, m.points, m.points_possible, m.comment, m.grader,
                           _utc_text(m.graded_at))) for m in scores]
        with _transaction(self._conn, "IMMEDIATE"):
            self._conn.executemany("INSERT OR REPLACE INTO manual_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def manual_scores(self, assignment: str) -> dict[str, dict[str, ManualScore]]:
        """submission id -> grade id -> the score given by hand."""
        scores: dict[str, dict[str, ManualScore]] = defaultdict(dict)
        for r in self._conn.execute("SELECT * FROM manual_scores WHERE assignment = ? ORDER BY submission_id, grade_id",
                                    _storable((assignment,))):
            scores[r["submission_id"]][r["grade_id"]] = ManualScore(
                r["submission_id"], r["grade_id"], r["points"], r["points_possible"], r["comment"], r["grader"],
                dt.datetime.fromisoformat(r["graded_at"]))
        return dict(scores)

    def submissions(self, assignment: str) -> list[SubmissionResult]:
        """Every graded submission of `assignment`, by submission id."""
        return self._load("assignment = ?", (assignment,))

    def get(self, assignment: str, submission_id: str) -> SubmissionResult | None:
        found = self._load("assignment = ? AND submission_id = ?", (assignment, submission_id))
        return found[0] if found else None

    def _load(self, where: str, params: tuple) -> list[SubmissionResult]:
        # One read transaction: the queries see the same snapshot while workers keep writing.
        params = _storable(params)
        with _transaction(self._conn, "DEFERRED"):
            subs = self._conn.execute(
                f"SELECT * FROM submissions WHERE {where} ORDER BY submission_id", params
            ).fetchall()
            results = self._conn.execute(
                f"SELECT * FROM results WHERE {where} ORDER BY submission_id, position", params
            ).fetchall()
            # The hand-in time and due date the LMS gave, recorded apart from the grade.
            times = {r[0]: (r[1], r[2]) for r in self._conn.execute(
                f"SELECT submission_id, submitted_at, due_at FROM handins WHERE {where}", params)}
        by_submission = defaultdict(list)
        for r in results:
            by_submission[r["submission_id"]].append(TestResult(**{name: r[name] for name in _RESULT_FIELDS}))
        loaded = [_submission_from_row(s, by_submission[s["submission_id"]]) for s in subs]
        for sub in loaded:
            submitted_at, due = times.get(sub.submission_id, (None, None))
            sub.submitted_at = _time_or_none(submitted_at) or sub.submitted_at
            sub.due = _time_or_none(due)
        return loaded


def _submission_from_row(row: sqlite3.Row, results: list[TestResult]) -> SubmissionResult:
    values = {name: row[name] for name in row.keys() if name != "incomplete"}
    values.update(
        graded_at=dt.datetime.fromisoformat(row["graded_at"]),
        submitted_at=_time_or_none(row["submitted_at"]),
    )
    return SubmissionResult(**values, results=results)


def _utc_or_none(moment: dt.datetime | None) -> str | None:
    return None if moment is None else _utc_text(moment)


def _time_or_none(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def _insert_sql(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str):
    """IMMEDIATE takes the write lock up front, so a busy writer is waited for, not hit mid-way."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _refused(path: Path, problem: str) -> GradebookError:
    return GradebookError(
        f"{path}: {problem}. The file was left untouched; move it away or pass another --gradebook path."
    )


def _check_header(path: Path) -> None:
    """Refuse foreign files from their header alone: SQLite opening them could rewrite them
    (recovering their journal, checkpointing their WAL)."""
    try:
        with path.open("rb") as f:
            header = f.read(_HEADER_SIZE)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GradebookError(f"{path}: cannot be read as a gradebook ({exc.strerror})") from None
    if not header:  # an open interrupted before creating the schema; SQLite too treats it as new
        return
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise _refused(path, "not a gradebook: the file is not an SQLite database")
    app_id = int.from_bytes(header[68:72], "big", signed=True)
    if app_id != APPLICATION_ID:
        raise _refused(
            path,
            f"not a gradebook: an SQLite database of another application "
            f"(application_id {app_id:#010x}, a gradebook has {APPLICATION_ID:#010x})",
        )


def _create_or_check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {row["name"] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        for statement in _SCHEMA + tuple(s for version in sorted(_UPGRADES) for s in _UPGRADES[version]):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in _TABLES_OF_VERSION:
        raise _refused(
            path,
            f"gradebook schema version {version}, this autograder reads versions up to {SCHEMA_VERSION} "
            f"(use the autograder version that wrote it)",
        )
    if tables != _TABLES_OF_VERSION[version]:
        raise _refused(path, f"its tables {sorted(tables)} are not a gradebook's {sorted(_TABLES_OF_VERSION[version])}")
    if version < SCHEMA_VERSION:  # an earlier gradebook gains what came since; nothing of it changes
        for statement in (s for v in sorted(_UPGRADES) if v > version for s in _UPGRADES[v]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
