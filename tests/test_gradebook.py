import datetime as dt
import hashlib
import multiprocessing
import os
import re
import sqlite3
import zoneinfo

import pytest

from autograder.course.gradebook import (
    APPLICATION_ID,
    Gradebook,
    GradebookError,
    HandinRecord,
    SCHEMA_VERSION,
    ManualScore,
    StaleVersion,
    SubmissionResult,
    TestResult,
    safe_text,
)

GRADED_AT = dt.datetime(2027, 4, 28, 10, 0, tzinfo=dt.timezone.utc)
NOW = GRADED_AT
# Forked workers: fast, and they inherit the helpers below.
FORK = multiprocessing.get_context("fork")


def result(test_id, question="top_k_filter", status="passed", earned=1.0, possible=1.0, message=""):
    return TestResult(test_id, question, status, earned, possible, message, duration_s=0.25)


def submission(submission_id="team01", **changes):
    values = dict(
        assignment="01_intro",
        submission_id=submission_id,
        path=f"submissions/{submission_id}.ipynb",
        submission_hash="notebook-v1",
        suite_hash="suite-v1",
        grader_version="0.1.0",
        device="cpu",
        status="graded",
        message="",
        results=[
            result("test_sampling.py::test_keeps_the_k_largest"),
            result("test_sampling.py::test_rejects_zero_k", status="failed", earned=0.0, message="no ValueError"),
        ],
        graded_at=GRADED_AT,
    )
    values.update(changes)
    return SubmissionResult(**values)


def sql(path, *statements):
    """Change a database behind the gradebook's back."""
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_round_trip_keeps_every_field(tmp_path):
    recorded = submission(
        results=[
            result("test_tokenize.py::test_round_trip", question="tokenize", earned=2.0, possible=2.0),
            result("test_sampling.py::test_on_gpu", status="needs-gpu", earned=0.0, possible=3.0,
                   message="needs GPU runner"),
            result("test_sampling.py::test_timeout", status="timeout", earned=0.0, message="took > 20 s"),
        ],
        submitted_at=dt.datetime(2027, 4, 27, 23, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
        load_messages="cell 4: shell escape `!pip install` skipped",
    )
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(recorded)
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        assert gb.get("01_intro", "team01") == recorded
        assert gb.submissions("01_intro") == [recorded]
        assert gb.get("01_intro", "team99") is None


def test_broken_characters_in_ids_paths_and_messages_are_stored_escaped(tmp_path):
    """A folder name with bytes that are not UTF-8 (os.fsdecode keeps them as surrogates) and a message
    with a lone surrogate used to make the SQLite write raise; they are stored escaped instead."""
    team = os.fsdecode(b"team\xff")
    broken = submission(
        team, path=f"lms/{team}/notebook.ipynb", load_messages="cell 2: \ud800 failed",
        results=[result("t.py::a", status="failed", earned=0.0, message="raised ValueError: \udcff\ud83d")],
    )
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(broken)
        stored = gb.get("01_intro", team)  # found by the id as discovered, too
        assert gb.is_current("01_intro", team, "notebook-v1", "suite-v1", "0.1.0")
        assert gb.submissions("01_intro") == [stored]
    assert (stored.submission_id, stored.path) == ("team\\xff", "lms/team\\xff/notebook.ipynb")
    assert stored.load_messages == "cell 2: \\ud800 failed"
    assert stored.results[0].message == "raised ValueError: \\udcff\\ud83d"


@pytest.mark.parametrize("text, stored", [("café", "café"), (os.fsdecode("café".encode()), "café"),
                                          (os.fsdecode(b"caf\xe9"), "caf\\xe9"), ("a\ud800b", "a\\ud800b")])
def test_safe_text_keeps_valid_text_and_escapes_the_rest(text, stored):
    assert safe_text(text) == stored


def test_submissions_are_ordered_by_id_and_keep_the_test_order(tmp_path):
    tests = [result("test_z.py::test_first"), result("test_a.py::test_second")]
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        for team in ("team03", "team01", "team02"):
            gb.record(submission(team, results=tests))
        gb.record(submission("team00", assignment="02_attention"))
        found = gb.submissions("01_intro")
    assert [s.submission_id for s in found] == ["team01", "team02", "team03"]
    assert all(s.results == tests for s in found)


def test_an_error_submission_round_trips_without_results(tmp_path):
    broken = submission(status="error", message="the notebook is not valid JSON", results=[])
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(broken)
        assert gb.get("01_intro", "team01") == broken


def test_derived_totals_group_points_by_question_in_test_order():
    sub = submission(
        results=[
            result("t.py::a", question="tokenize", earned=1.0, possible=1.0),
            result("t.py::b", question="generate", earned=0.0, possible=2.0, status="failed"),
            result("t.py::c", question="tokenize", earned=0.5, possible=0.5),
        ]
    )
    assert (sub.earned, sub.possible, sub.incomplete) == (1.5, 3.5, False)
    assert list(sub.per_question().items()) == [("tokenize", (1.5, 1.5)), ("generate", (0.0, 2.0))]
    assert submission(results=[result("t.py::gpu", status="needs-gpu", earned=0.0)]).incomplete
    assert not submission(results=[result("t.py::gpu", status="needs-gpu", earned=0.0, possible=0.0)]).incomplete


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: result("t.py::a", status="skipped"), "unknown test status 'skipped'"),
        (lambda: result("t.py::a", earned=2.0, possible=1.0), "outside 0..1.0"),
        (lambda: submission(status="ok"), "unknown submission status 'ok'"),
        (lambda: submission(status="error", results=[]), "needs a message"),
        (lambda: submission(graded_at=dt.datetime(2027, 4, 28, 10)), "graded_at 2027-04-28 10:00:00 has no time zone"),
        (lambda: submission(submitted_at=dt.datetime(2027, 4, 27)), "submitted_at 2027-04-27 00:00:00 has no time"),
        (lambda: submission(results=[result("t.py::a"), result("t.py::a")]), "more than once: ['t.py::a']"),
    ],
)
def test_invalid_results_are_rejected(make, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        make()


@pytest.mark.parametrize(
    "change",
    [
        {"submission_hash": "notebook-v2"},
        {"suite_hash": "suite-v2"},
        {"grader_version": "0.2.0"},
        {"submission_id": "team02"},
        {"assignment": "02_attention"},
    ],
)
def test_is_current_only_for_the_same_notebook_suite_and_grader(tmp_path, change):
    keys = dict(assignment="01_intro", submission_id="team01", submission_hash="notebook-v1",
                suite_hash="suite-v1", grader_version="0.1.0")
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        assert not gb.is_current(**keys)
        gb.record(submission())
        assert gb.is_current(**keys)
        assert not gb.is_current(**{**keys, **change})


def test_an_incomplete_grade_is_current_on_a_cpu_grader_but_not_on_a_gpu_runner(tmp_path):
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(submission(results=[result("t.py::gpu", status="needs-gpu", earned=0.0)]))
        assert gb.is_current("01_intro", "team01", "notebook-v1", "suite-v1", "0.1.0")
        assert not gb.is_current("01_intro", "team01", "notebook-v1", "suite-v1", "0.1.0", gpu_runner=True)
        gb.record(submission())
        assert gb.is_current("01_intro", "team01", "notebook-v1", "suite-v1", "0.1.0", gpu_runner=True)


def test_record_again_replaces_the_earlier_grade(tmp_path):
    regraded = submission(submission_hash="notebook-v2", results=[result("t.py::only", status="failed", earned=0.0)])
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(submission())
        gb.record(submission("team02"))
        gb.record(regraded)
        assert gb.submissions("01_intro") == [regraded, submission("team02")]


def _die_in_the_middle_of_record(path):
    gb = Gradebook.open(path)

    def kill_before_results(statement):
        if statement.startswith("INSERT INTO results"):
            os._exit(3)  # a killed worker: no rollback, no close

    gb._conn.set_trace_callback(kill_before_results)  # fault injection needs the connection
    gb.record(submission(submission_hash="notebook-v2"))


def test_a_worker_killed_mid_record_leaves_the_previous_grade(tmp_path):
    path = tmp_path / "gradebook.db"
    with Gradebook.open(path) as gb:
        gb.record(submission())
    worker = FORK.Process(target=_die_in_the_middle_of_record, args=(path,))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 3  # it died inside record, after deleting and rewriting the submission row
    with Gradebook.open(path) as gb:
        assert gb.get("01_intro", "team01") == submission()


def test_a_reader_during_record_sees_the_previous_grade(tmp_path):
    path = tmp_path / "gradebook.db"
    regraded = submission(submission_hash="notebook-v2", results=[result("t.py::only_test")])
    seen = []
    with Gradebook.open(path) as writer, Gradebook.open(path) as reader:
        writer.record(submission())

        def read_mid_write(statement):
            if statement.startswith("INSERT INTO results"):
                seen.append(reader.get("01_intro", "team01"))

        writer._conn.set_trace_callback(read_mid_write)  # fault injection needs the connection
        writer.record(regraded)
        assert seen == [submission()]
        assert reader.get("01_intro", "team01") == regraded


def _record_many(path, prefix, count, start):
    with Gradebook.open(path) as gb:
        start.wait()
        for i in range(count):
            gb.record(submission(f"{prefix}{i:02d}"))


def test_concurrent_workers_writing_different_submissions_all_land(tmp_path):
    path = tmp_path / "gradebook.db"
    _gradebook(path)
    start = FORK.Barrier(2, timeout=10)  # a worker that fails to open must not hang the other
    workers = [FORK.Process(target=_record_many, args=(path, prefix, 25, start)) for prefix in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    with Gradebook.open(path) as gb:
        found = gb.submissions("01_intro")
    assert [s.submission_id for s in found] == [f"{p}{i:02d}" for p in "ab" for i in range(25)]
    assert all(s == submission(s.submission_id) for s in found)


def test_a_new_gradebook_is_created_with_its_folder_and_marked_as_ours(tmp_path):
    path = tmp_path / "out" / "grades" / "gradebook.db"
    with Gradebook.open(path) as gb:
        gb.record(submission())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    conn.close()


def test_an_empty_file_left_by_an_interrupted_open_is_initialised(tmp_path):
    (tmp_path / "gradebook.db").touch()
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        gb.record(submission())
        assert gb.get("01_intro", "team01") == submission()


def _not_sqlite(path):
    path.write_text("submission,total\nteam01,20\n")


def _truncated_sqlite(path):
    path.write_bytes(b"SQLite format 3\x00" + bytes(40))


def _other_application(path):
    sql(path, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('ada')")


def _other_application_id(path):
    sql(path, "PRAGMA application_id = 1234", "CREATE TABLE submissions (x)")


def _gradebook(path):
    Gradebook.open(path).close()


def _unknown_tables(path):
    _gradebook(path)
    sql(path, "CREATE TABLE users (name TEXT)")


def _newer_schema(path):
    _gradebook(path)
    sql(path, "PRAGMA user_version = 5")


def _damaged(path):
    with Gradebook.open(path) as gb:
        gb.record(submission())
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xab" * (4096 - 100)  # the table list on the first page
    path.write_bytes(data)


@pytest.mark.parametrize(
    "make, problem",
    [
        (_not_sqlite, "the file is not an SQLite database"),
        (_truncated_sqlite, "the file is not an SQLite database"),
        (_other_application, "another application (application_id 0x00000000"),
        (_other_application_id, "another application (application_id 0x000004d2"),
        (_unknown_tables, "'submissions', 'users'] are not a gradebook's"),
        (_newer_schema, "schema version 5, this autograder reads versions up to 4"),
        (_damaged, "SQLite cannot read it (database disk image is malformed)"),
    ],
)
def test_a_foreign_or_damaged_file_is_refused_and_left_untouched(tmp_path, make, problem):
    path = tmp_path / "gradebook.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(GradebookError) as refused:
        Gradebook.open(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert problem in str(refused.value)
    assert "left untouched" in str(refused.value)
    assert path.read_bytes() == before


def test_a_version_1_gradebook_gains_the_new_tables_and_keeps_its_grades(tmp_path):
    path = tmp_path / "gradebook.db"
    with Gradebook.open(path) as gb:
        gb.record(submission())
    sql(path, *(f"DROP TABLE {t}" for t in ("handins", "manual_scores", "graders", "rubric_items", "overrides",
                                            "regrades", "grading_log", "settings")), "PRAGMA user_version = 1")
    with Gradebook.open(path) as gb:
        assert [s.submission_id for s in gb.submissions(submission().assignment)] == [submission().submission_id]
        gb.record_manual(submission().assignment, [ManualScore(submission().submission_id, "reflection", 1.5, 2, "",
                                                               "ta", NOW)])
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_2_gradebook_gains_due_dates_and_keeps_its_hand_ins(tmp_path):
    """Schema 3 adds a hand-in's own due date (an extension); a gradebook of version 2 is upgraded in place."""
    path = tmp_path / "gradebook.db"
    sub = submission()
    with Gradebook.open(path) as gb:
        gb.record(sub)
    sql(path, *(f"DROP TABLE {t}" for t in ("graders", "rubric_items", "overrides", "regrades", "grading_log",
                                            "settings")),
        "ALTER TABLE manual_scores DROP COLUMN rubric", "ALTER TABLE manual_scores DROP COLUMN adjustment",
        "ALTER TABLE manual_scores DROP COLUMN version", "DROP TABLE handins", """CREATE TABLE handins (assignment TEXT NOT NULL, submission_id TEXT NOT NULL,
        team TEXT, members TEXT NOT NULL, submitted_at TEXT, notes TEXT NOT NULL,
        PRIMARY KEY (assignment, submission_id))""",
        f"INSERT INTO handins VALUES ('{sub.assignment}', '{sub.submission_id}', 'team01', '[\"s1\"]', "
        f"'{NOW.isoformat()}', 'first')", "PRAGMA user_version = 2")
    extended = NOW + dt.timedelta(days=3)
    with Gradebook.open(path) as gb:
        kept = gb.handins(sub.assignment)[sub.submission_id]
        assert (kept.team, kept.members, kept.submitted_at, kept.notes, kept.due) == ("team01", ("s1",), NOW, "first", None)
        gb.record_handin(sub.assignment, HandinRecord(sub.submission_id, "team01", ("s1",), NOW, "first", extended))
        assert gb.handins(sub.assignment)[sub.submission_id].due == extended
        loaded = gb.get(sub.assignment, sub.submission_id)
        assert (loaded.submitted_at, loaded.due) == (NOW, extended)
        gb.record(loaded)  # a regrade keeps the hand-in's due date apart from the grade
        assert gb.get(sub.assignment, sub.submission_id).due == extended
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _version_3(path):
    """A gradebook as version 3 wrote it: without the web workspace's tables and score columns."""
    with Gradebook.open(path) as gb:
        gb.record(submission())
    sql(path, *(f"DROP TABLE {t}" for t in ("graders", "rubric_items", "overrides", "regrades", "grading_log",
                                            "settings")),
        "DROP TABLE manual_scores", """CREATE TABLE manual_scores (assignment TEXT NOT NULL, submission_id TEXT NOT NULL,
        grade_id TEXT NOT NULL, points REAL NOT NULL, points_possible REAL NOT NULL, comment TEXT NOT NULL,
        grader TEXT NOT NULL, graded_at TEXT NOT NULL, PRIMARY KEY (assignment, submission_id, grade_id))""",
        f"INSERT INTO manual_scores VALUES ('01_intro', 'team01', 'reflection', 1.5, 2, 'fine', 'ta', "
        f"'{NOW.isoformat()}')", "PRAGMA user_version = 3")


def test_a_version_3_gradebook_gains_the_workspace_tables_and_keeps_its_scores(tmp_path):
    """Schema 4 adds graders, rubrics, overrides, regrades and the log; a version-3 file upgrades in place and a
    score given from a sheet keeps its points (as its adjustment) and can be graded on from version 1."""
    path = tmp_path / "gradebook.db"
    _version_3(path)
    with Gradebook.open(path) as gb:
        assert [s.submission_id for s in gb.submissions("01_intro")] == ["team01"]
        kept = gb.manual_scores("01_intro")["team01"]["reflection"]
        assert (kept.points, kept.comment, kept.grader, kept.rubric, kept.adjustment, kept.version) == (
            1.5, "fine", "ta", (), 1.5, 1)
        with pytest.raises(StaleVersion):
            gb.save_manual("01_intro", "team01", "reflection", 2, [], 2.0, "", "tb", base_version=0)
        assert gb.save_manual("01_intro", "team01", "reflection", 2, [], 2.0, "", "tb", base_version=1).version == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_rubric_changes_regrade_every_score_that_used_the_item_and_are_logged(tmp_path):
    with Gradebook.open(tmp_path / "gradebook.db") as gb:
        good = gb.add_rubric_item("01_intro", "reflection", "names the trade-off", 1.5, "prof")
        vague = gb.add_rubric_item("01_intro", "reflection", "vague", -0.5, "prof")
        gb.save_manual("01_intro", "team01", "reflection", 2, [good.item_id, vague.item_id], 0.0, "", "ta", 0)
        gb.save_manual("01_intro", "team02", "reflection", 2, [good.item_id], 0.25, "", "tb", 0)
        gb.save_manual("01_intro", "team03", "reflection", 2, [vague.item_id], 0.0, "", "tb", 0)
        assert [s["reflection"].points for s in gb.manual_scores("01_intro").values()] == [1.0, 1.75, 0.0]
        assert gb.change_rubric_item("01_intro", good.item_id, "names the trade-off", 2.0, "prof") == 2
        scores = gb.manual_scores("01_intro")
        assert [s["reflection"].points for s in scores.values()] == [1.5, 2.0, 0.0]  # 2.25 kept within 0..2
        assert [s["reflection"].version for s in scores.values()] == [2, 2, 1]
        log = gb.log("01_intro")
        assert [(e.action, e.submission_id) for e in log[:3]] == [
            ("rubric-regrade", "team02"), ("rubric-regrade", "team01"), ("rubric-change", "")]
        assert (log[0].old["points"], log[0].new["points"], log[0].new["rubric"]) == (1.75, 2.0, [good.item_id])


def test_the_grading_log_is_append_only(tmp_path):
    path = tmp_path / "gradebook.db"
    with Gradebook.open(path) as gb:
        gb.set_override("01_intro", "team01", "test_a.py::test_b", 1.0, "fixed test", "prof")
    conn = sqlite3.connect(path)
    for statement in ("UPDATE grading_log SET grader = 'someone else'", "DELETE FROM grading_log"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()
    with Gradebook.open(path) as gb:
        assert [(e.grader, e.action, e.new) for e in gb.log()] == [
            ("prof", "override", {"points": 1.0, "reason": "fixed test"})]


def test_tokens_are_stored_hashed_and_renewing_one_revokes_the_old(tmp_path):
    path = tmp_path / "gradebook.db"
    with Gradebook.open(path) as gb:
        first = gb.add_grader("ta1")
        assert gb.grader_by_token(first).name == "ta1" and not gb.grader_by_token(first).instructor
        second = gb.add_grader("ta1")
        assert gb.grader_by_token(first) is None and gb.grader_by_token(second).name == "ta1"
        assert gb.grader_by_token("") is None
    stored = path.read_bytes()  # closed: every write is in the file
    assert hashlib.sha256(second.encode()).hexdigest().encode() in stored and second.encode() not in stored
