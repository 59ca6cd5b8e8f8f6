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
import hashlib
import json
import secrets
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_PATH = Path("gradebook.db")
APPLICATION_ID = 0x41475244  # "AGRD" in the SQLite header marks a file as our gradebook
SCHEMA_VERSION = 4  # 2 added `handins` (who, when) and `manual_scores` (reflections graded by hand); 3 a hand-in's
# own due date (an extension the LMS granted); 4 what graders do in the web workspace (graders, rubrics, overrides,
# regrade requests, the append-only grading log) and the rubric and version of each hand-given score
BUSY_TIMEOUT_S = 30.0  # how long a worker waits for another worker's write to finish

# "graded-by-hand" and "needs-grading" are hand-graded cells, added by `manual.with_manual_scores`, never stored here.
TEST_STATUSES = ("passed", "failed", "error", "timeout", "needs-gpu", "graded-by-hand", "needs-grading")
SUBMISSION_STATUSES = ("graded", "error")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100
_TABLES_3 = {"submissions", "results", "handins", "manual_scores"}
_TABLES = _TABLES_3 | {"graders", "rubric_items", "overrides", "regrades", "grading_log", "settings"}
_TABLES_OF_VERSION = {1: {"submissions", "results"}, 2: _TABLES_3, 3: _TABLES_3, 4: _TABLES}
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
# Several graders at once: who they are (a token's hash, never the token), rubric items per hand-graded cell,
# instructors' overrides of automatic checks and students' regrade requests, all kept apart from the grade so
# a regrade keeps them; every change also goes to `grading_log`, which triggers keep append-only. A score's
# `version` lets a save made against an older version be refused instead of overwriting another grader's.
_SCHEMA_4 = (
    """CREATE TABLE graders (
        name            TEXT PRIMARY KEY,
        token_hash      TEXT NOT NULL UNIQUE,
        instructor      INTEGER NOT NULL,
        reveal_names    INTEGER NOT NULL DEFAULT 0,
        created_at      TEXT NOT NULL
    )""",
    """CREATE TABLE rubric_items (
        item_id         INTEGER PRIMARY KEY,
        assignment      TEXT NOT NULL,
        grade_id        TEXT NOT NULL,
        label           TEXT NOT NULL,
        points          REAL NOT NULL
    )""",
    "ALTER TABLE manual_scores ADD COLUMN rubric TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE manual_scores ADD COLUMN adjustment REAL NOT NULL DEFAULT 0",
    "ALTER TABLE manual_scores ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
    "UPDATE manual_scores SET adjustment = points",  # a score from a sheet: its points, no rubric item
    """CREATE TABLE overrides (
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        test_id         TEXT NOT NULL,
        points          REAL NOT NULL,
        reason          TEXT NOT NULL,
        grader          TEXT NOT NULL,
        at              TEXT NOT NULL,
        PRIMARY KEY (assignment, submission_id, test_id)
    )""",
    """CREATE TABLE regrades (
        regrade_id      INTEGER PRIMARY KEY,
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        test_id         TEXT NOT NULL,
        request         TEXT NOT NULL,
        recorded_by     TEXT NOT NULL,
        recorded_at     TEXT NOT NULL,
        outcome         TEXT,
        resolved_by     TEXT,
        resolved_at     TEXT
    )""",
    """CREATE TABLE grading_log (
        seq             INTEGER PRIMARY KEY,
        at              TEXT NOT NULL,
        grader          TEXT NOT NULL,
        assignment      TEXT NOT NULL,
        submission_id   TEXT NOT NULL,
        target          TEXT NOT NULL,
        action          TEXT NOT NULL,
        old             TEXT,
        new             TEXT
    )""",
    """CREATE TRIGGER grading_log_no_update BEFORE UPDATE ON grading_log
        BEGIN SELECT RAISE(ABORT, 'the grading log is append-only'); END""",
    """CREATE TRIGGER grading_log_no_delete BEFORE DELETE ON grading_log
        BEGIN SELECT RAISE(ABORT, 'the grading log is append-only'); END""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
# What brings a gradebook of the version before each key to that version; a new file runs them all.
_UPGRADES = {2: _SCHEMA_2, 3: _SCHEMA_3, 4: _SCHEMA_4}


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
    """Points a grader gave one hand-graded cell (a reflection) of one submission: the rubric items applied
    plus a free adjustment, within 0..points_possible (a score from a sheet has no items, its points are the
    adjustment). `version` counts its saves, so a save against an older one is refused."""

    submission_id: str
    grade_id: str
    points: float
    points_possible: float
    comment: str
    grader: str
    graded_at: dt.datetime
    rubric: tuple[int, ...] = ()
    adjustment: float | None = None  # None: the points themselves (a score from a sheet)
    version: int = 0


class StaleVersion(Exception):
    """A save made against an older version of a score; nothing was written. `current` is the stored one."""

    def __init__(self, current: ManualScore):
        super().__init__(f"{current.submission_id}/{current.grade_id}: saved meanwhile by {current.grader} "
                         f"(version {current.version})")
        self.current = current


@dataclass(frozen=True)
class Grader:
    """Someone with a token: a grader, or an instructor (who alone edits rubrics, overrides and reveals names)."""

    name: str
    instructor: bool
    reveal_names: bool


@dataclass(frozen=True)
class RubricItem:
    """A reusable verdict on a hand-graded cell: points it adds (or deducts, when negative)."""

    item_id: int
    grade_id: str
    label: str
    points: float


@dataclass(frozen=True)
class Override:
    """An instructor's points for one automatic check of one submission, kept across regrades."""

    submission_id: str
    test_id: str
    points: float
    reason: str
    grader: str
    at: dt.datetime


@dataclass(frozen=True)
class Regrade:
    """A student's regrade request on one check (or hand-graded cell) and, once decided, its outcome."""

    regrade_id: int
    submission_id: str
    test_id: str
    request: str
    recorded_by: str
    recorded_at: dt.datetime
    outcome: str | None
    resolved_by: str | None
    resolved_at: dt.datetime | None


@dataclass(frozen=True)
class LogEntry:
    """One change in the append-only grading log: who, when, what, and its value before and after."""

    seq: int
    at: dt.datetime
    grader: str
    assignment: str
    submission_id: str
    target: str
    action: str
    old: dict | None
    new: dict | None


def rubric_points(item_points: list[float], adjustment: float, possible: float) -> float:
    """The points of a score: its rubric items and adjustment added up, kept within 0..possible."""
    return min(max(sum(item_points) + adjustment, 0.0), possible)


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
        """Store hand-given points from a sheet, all or none; a later score of the same cell replaces the
        earlier one (its rubric items too) and the change is logged."""
        with _transaction(self._conn, "IMMEDIATE"):
            for m in scores:
                current = self._manual_score(assignment, m.submission_id, m.grade_id)
                self._write_manual(assignment, ManualScore(
                    m.submission_id, m.grade_id, m.points, m.points_possible, m.comment, m.grader, m.graded_at, (),
                    m.points, (current.version if current else 0) + 1), current, "import")

    def save_manual(self, assignment: str, submission_id: str, grade_id: str, possible: float, rubric: list[int],
                    adjustment: float, comment: str, grader: str, base_version: int) -> ManualScore:
        """Save a grader's score made on top of `base_version` (0: none yet); `StaleVersion` if another save
        came first. Its points are those of its rubric items and adjustment."""
        with _transaction(self._conn, "IMMEDIATE"):
            current = self._manual_score(assignment, submission_id, grade_id)
            if (current.version if current else 0) != base_version:
                raise StaleVersion(current)
            items = {i.item_id: i for i in self.rubric(assignment, grade_id)}
            unknown = [i for i in rubric if i not in items]
            if unknown:
                raise ValueError(f"{grade_id}: no rubric item {unknown[0]}")
            applied = tuple(sorted(set(rubric)))
            score = ManualScore(submission_id, grade_id, rubric_points([items[i].points for i in applied], adjustment,
                                                                       possible),
                                possible, comment, grader, _now(), applied, adjustment, base_version + 1)
            self._write_manual(assignment, score, current, "grade")
        return score

    def _write_manual(self, assignment: str, score: ManualScore, old: ManualScore | None, action: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO manual_scores (assignment, submission_id, grade_id, points, points_possible, "
            "comment, grader, graded_at, rubric, adjustment, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _storable((assignment, score.submission_id, score.grade_id, score.points, score.points_possible,
                       score.comment, score.grader, _utc_text(score.graded_at), json.dumps(list(score.rubric)),
                       score.points if score.adjustment is None else score.adjustment, score.version)))
        self._log(score.grader, assignment, score.submission_id, f"manual::{score.grade_id}", action,
                  _score_fields(old), _score_fields(score))

    def _manual_score(self, assignment: str, submission_id: str, grade_id: str) -> ManualScore | None:
        row = self._conn.execute(
            "SELECT * FROM manual_scores WHERE assignment = ? AND submission_id = ? AND grade_id = ?",
            _storable((assignment, submission_id, grade_id))).fetchone()
        return None if row is None else _manual_from_row(row)

    def manual_scores(self, assignment: str) -> dict[str, dict[str, ManualScore]]:
        """submission id -> grade id -> the score given by hand."""
        scores: dict[str, dict[str, ManualScore]] = defaultdict(dict)
        for r in self._conn.execute("SELECT * FROM manual_scores WHERE assignment = ? ORDER BY submission_id, grade_id",
                                    _storable((assignment,))):
            scores[r["submission_id"]][r["grade_id"]] = _manual_from_row(r)
        return dict(scores)

    def add_grader(self, name: str, instructor: bool = False) -> str:
        """Create (or renew) the token of grader `name` and return it; only its hash is stored."""
        token = secrets.token_urlsafe(24)
        with _transaction(self._conn, "IMMEDIATE"):
            self._conn.execute("INSERT OR REPLACE INTO graders (name, token_hash, instructor, created_at) "
                               "VALUES (?, ?, ?, ?)", _storable((name, _token_hash(token), instructor,
                                                                 _utc_text(_now()))))
        return token

    def grader_by_token(self, token: str) -> Grader | None:
        row = self._conn.execute("SELECT name, instructor, reveal_names FROM graders WHERE token_hash = ?",
                                 (_token_hash(token),)).fetchone()
        return None if row is None else Grader(row[0], bool(row[1]), bool(row[2]))

    def graders(self) -> list[Grader]:
        return [Grader(r[0], bool(r[1]), bool(r[2])) for r in self._conn.execute(
            "SELECT name, instructor, reveal_names FROM graders ORDER BY name")]

    def set_reveal_names(self, name: str, reveal: bool) -> None:
        with _transaction(self._conn, "IMMEDIATE"):
            self._conn.execute("UPDATE graders SET reveal_names = ? WHERE name = ?", (reveal, name))

    def setting(self, key: str, make) -> str:
        """The stored value of `key`, made by `make()` and stored the first time it is asked for."""
        with _transaction(self._conn, "IMMEDIATE"):
            row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return row[0]
            value = make()
            self._conn.execute("INSERT INTO settings VALUES (?, ?)", (key, value))
        return value

    def rubric(self, assignment: str, grade_id: str | None = None) -> list[RubricItem]:
        """The rubric items of one cell (or of every cell), in the order they were made."""
        where, params = ("AND grade_id = ?", (assignment, grade_id)) if grade_id is not None else ("", (assignment,))
        return [RubricItem(r["item_id"], r["grade_id"], r["label"], r["points"]) for r in self._conn.execute(
            f"SELECT * FROM rubric_items WHERE assignment = ? {where} ORDER BY item_id", _storable(params))]

    def add_rubric_item(self, assignment: str, grade_id: str, label: str, points: float, by: str) -> RubricItem:
        with _transaction(self._conn, "IMMEDIATE"):
            cursor = self._conn.execute("INSERT INTO rubric_items (assignment, grade_id, label, points) "
                                        "VALUES (?, ?, ?, ?)", _storable((assignment, grade_id, label, points)))
            item = RubricItem(cursor.lastrowid, grade_id, label, points)
            self._log(by, assignment, "", f"rubric:{item.item_id}", "rubric-add", None, _item_fields(item))
        return item

    def change_rubric_item(self, assignment: str, item_id: int, label: str, points: float, by: str) -> int:
        """Change an item's label and points, and the points of every score that applied it (each logged, its
        version bumped, so a grader's open copy is refused rather than written back). Returns how many."""
        with _transaction(self._conn, "IMMEDIATE"):
            old = next((i for i in self.rubric(assignment) if i.item_id == item_id), None)
            if old is None:
                raise ValueError(f"no rubric item {item_id} in {assignment}")
            self._conn.execute("UPDATE rubric_items SET label = ?, points = ? WHERE item_id = ?",
                               _storable((label, points, item_id)))
            new = RubricItem(item_id, old.grade_id, label, points)
            self._log(by, assignment, "", f"rubric:{item_id}", "rubric-change", _item_fields(old), _item_fields(new))
            items = {i.item_id: i.points for i in self.rubric(assignment, old.grade_id)}
            changed = 0
            for rows in self.manual_scores(assignment).values():
                score = rows.get(old.grade_id)
                if score is None or item_id not in score.rubric:
                    continue
                points = rubric_points([items[i] for i in score.rubric], score.adjustment, score.points_possible)
                self._write_manual(assignment, ManualScore(
                    score.submission_id, score.grade_id, points, score.points_possible, score.comment, by, _now(),
                    score.rubric, score.adjustment, score.version + 1), score, "rubric-regrade")
                changed += 1
        return changed

    def set_override(self, assignment: str, submission_id: str, test_id: str, points: float | None, reason: str,
                     by: str) -> None:
        """Set an automatic check's points by hand (None: back to the grader's verdict); logged."""
        key = _storable((assignment, submission_id, test_id))
        with _transaction(self._conn, "IMMEDIATE"):
            old = self.overrides(assignment).get(submission_id, {}).get(test_id)
            self._conn.execute("DELETE FROM overrides WHERE assignment = ? AND submission_id = ? AND test_id = ?", key)
            if points is not None:
                self._conn.execute("INSERT INTO overrides VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   [*key, points, *_storable((reason, by)), _utc_text(_now())])
            self._log(by, assignment, submission_id, test_id, "override",
                      old and {"points": old.points, "reason": old.reason},
                      None if points is None else {"points": points, "reason": reason})

    def overrides(self, assignment: str) -> dict[str, dict[str, Override]]:
        """submission id -> test id -> the instructor's points for that check."""
        found: dict[str, dict[str, Override]] = defaultdict(dict)
        for r in self._conn.execute("SELECT * FROM overrides WHERE assignment = ?", _storable((assignment,))):
            found[r["submission_id"]][r["test_id"]] = Override(r["submission_id"], r["test_id"], r["points"],
                                                               r["reason"], r["grader"], _time_or_none(r["at"]))
        return dict(found)

    def record_regrade(self, assignment: str, submission_id: str, test_id: str, request: str, by: str) -> int:
        with _transaction(self._conn, "IMMEDIATE"):
            cursor = self._conn.execute(
                "INSERT INTO regrades (assignment, submission_id, test_id, request, recorded_by, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", _storable((assignment, submission_id, test_id, request, by,
                                                        _utc_text(_now()))))
            self._log(by, assignment, submission_id, test_id, "regrade-request", None,
                      {"regrade": cursor.lastrowid, "request": request})
        return cursor.lastrowid

    def resolve_regrade(self, assignment: str, regrade_id: int, outcome: str, by: str) -> Regrade:
        with _transaction(self._conn, "IMMEDIATE"):
            old = next((r for r in self.regrades(assignment) if r.regrade_id == regrade_id), None)
            if old is None:
                raise ValueError(f"no regrade request {regrade_id} in {assignment}")
            self._conn.execute("UPDATE regrades SET outcome = ?, resolved_by = ?, resolved_at = ? WHERE regrade_id = ?",
                               _storable((outcome, by, _utc_text(_now()), regrade_id)))
            self._log(by, assignment, old.submission_id, old.test_id, "regrade-outcome",
                      {"regrade": regrade_id, "outcome": old.outcome}, {"regrade": regrade_id, "outcome": outcome})
        return next(r for r in self.regrades(assignment) if r.regrade_id == regrade_id)

    def regrades(self, assignment: str) -> list[Regrade]:
        return [Regrade(r["regrade_id"], r["submission_id"], r["test_id"], r["request"], r["recorded_by"],
                        _time_or_none(r["recorded_at"]), r["outcome"], r["resolved_by"], _time_or_none(r["resolved_at"]))
                for r in self._conn.execute("SELECT * FROM regrades WHERE assignment = ? ORDER BY regrade_id",
                                            _storable((assignment,)))]

    def log(self, assignment: str | None = None, limit: int = 1000) -> list[LogEntry]:
        """The newest `limit` entries of the grading log (of one assignment, or all), newest first."""
        where, params = ("WHERE assignment = ?", (assignment,)) if assignment is not None else ("", ())
        return [LogEntry(r["seq"], _time_or_none(r["at"]), r["grader"], r["assignment"], r["submission_id"],
                         r["target"], r["action"], json.loads(r["old"] or "null"), json.loads(r["new"] or "null"))
                for r in self._conn.execute(f"SELECT * FROM grading_log {where} ORDER BY seq DESC LIMIT ?",
                                            _storable((*params, limit)))]

    def _log(self, grader: str, assignment: str, submission_id: str, target: str, action: str, old, new) -> None:
        self._conn.execute("INSERT INTO grading_log (at, grader, assignment, submission_id, target, action, old, new) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           _storable((_utc_text(_now()), grader, assignment, submission_id, target, action,
                                      None if old is None else json.dumps(old),
                                      None if new is None else json.dumps(new))))

    def submissions(self, assignment: str) -> list[SubmissionResult]:
        """Every graded submission of `assignment`, by submission id."""
        return self._load("assignment = ?", (assignment,))

    def graded_ids(self, assignment: str) -> list[str]:
        """The ids of the submissions whose notebook was read (what graders grade), without loading their results."""
        return [r[0] for r in self._conn.execute(
            "SELECT submission_id FROM submissions WHERE assignment = ? AND status = 'graded' ORDER BY submission_id",
            _storable((assignment,)))]

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


def _manual_from_row(r: sqlite3.Row) -> ManualScore:
    return ManualScore(r["submission_id"], r["grade_id"], r["points"], r["points_possible"], r["comment"], r["grader"],
                       dt.datetime.fromisoformat(r["graded_at"]), tuple(json.loads(r["rubric"])), r["adjustment"],
                       r["version"])


def _score_fields(score: ManualScore | None) -> dict | None:
    """What the grading log keeps of a score: enough to see who changed what."""
    return None if score is None else {"points": score.points, "rubric": list(score.rubric),
                                       "adjustment": score.adjustment, "comment": score.comment,
                                       "version": score.version}


def _item_fields(item: RubricItem) -> dict:
    return {"grade_id": item.grade_id, "label": item.label, "points": item.points}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
