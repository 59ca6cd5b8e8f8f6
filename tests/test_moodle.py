"""Moodle round trip: its download and grading worksheet in, the filled worksheet out.

The downloads are built the way Moodle builds them (see the README for the versions and source files):
before 4.1 `mod/assign/locallib.php` `download_submissions`, from 4.1 `mod/assign/classes/downloader.php`
(whose expected paths `mod/assign/tests/downloader_test.php` lists); the worksheet's columns are those of
`mod/assign/gradingtable.php` when downloading, and its Status text is `col_status`'s, divs joined by " - ".
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import zipfile
import zoneinfo

import pytest

from autograder.cli import main
from autograder.exports.moodle import MoodleError, extension_until, read_worksheet, submission_time
from autograder.student.packing import pack
from conftest import ASSIGNMENT, CORRECT, Cells, write_notebook

pytestmark = pytest.mark.slow

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
WRONG = CORRECT.replace("logits < kth", "logits <= kth")
TEAMS = [
    {"id": "team01", "members": [{"id": "s101", "name": "Zoë Brontë", "email": "zoe@uni.example"},
                                 {"id": "s102", "name": "José María Núñez", "email": "jose@uni.example"}]},
    {"id": "team02", "members": [{"id": "s201", "name": "Ana Lúcia", "email": "ana@uni.example"},
                                 {"id": "s202", "name": "Ben O'Dea", "email": "ben@uni.example"}]},
    {"id": "team03", "members": [{"id": "s301", "name": "Dara Ó Briain", "email": "dara@uni.example"}]},
]
PEOPLE = [("1001", "Zoë Brontë", "zoe@uni.example"), ("1002", "José María Núñez", "jose@uni.example"),
          ("2001", "Ana Lúcia", "ana@uni.example"), ("2002", "Ben O'Dea", "ben@uni.example"),
          ("3001", "Dara Ó Briain", "dara@uni.example")]
# Moodle groups of the group-submission assignment: group id, name; Dara is in none ("Default group").
GROUPS = {"1001": ("71", "Team_01"), "1002": ("71", "Team_01"), "2001": ("72", "Team 02"), "2002": ("72", "Team 02")}


def moodle_time(moment: dt.datetime) -> str:
    """As Moodle writes it in English: 'Tuesday, 27 April 2027, 11:45 PM'."""
    return f"{moment:%A}, {moment.day} {moment:%B %Y}, {int(moment.strftime('%I'))}:{moment:%M %p}"


def worksheet(path, at: dict, groups: bool = False, status: dict | None = None):
    """The grading worksheet (UTF-8 with a byte order mark), columns in gradingtable.php's order."""
    header = ["Identifier", "Full name", "Email address", "Status", *(["Group"] if groups else []), "Grade",
              "Maximum Grade", "Grade can be changed", "Last modified (submission)", "Online text",
              "Last modified (grade)", "Feedback comments"]
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(header)
        for pid, name, email in PEOPLE:
            group = GROUPS.get(pid, (None, "Default group"))[1]
            shown = "Submitted for grading - Not graded" if pid in at else "No submission - Not graded"
            w.writerow([f"Participant {pid}", name, email, (status or {}).get(pid, shown), *([group] if groups else []),
                        "", "100.00", "Yes", moodle_time(at[pid]) if pid in at else "-", "", "-", ""])
    return path


def entry(prefix: str, plugin: str, name: str, version: str, folders: bool) -> str:
    """A path inside the zip as Moodle writes it: in folders `<prefix>_assignsubmission_<plugin>_/` before
    4.1 and without the last `_` from 4.1; flat `<prefix>_assignsubmission_<plugin>_<file>`."""
    if not folders:
        return f"{prefix}_assignsubmission_{plugin}_{name}"
    return f"{prefix}_assignsubmission_{plugin}{'_' if version == '4.0' else ''}/{name}"


def person(pid: str) -> str:
    name = dict((p, n) for p, n, _ in PEOPLE)[pid]
    return f"{name.replace('_', ' ')}_{pid}"


def group_prefixes(pid: str, version: str) -> list[str]:
    """4.1+: one prefix per group (`<Group>_<id>`, or `Default group`); before: one per member who is in
    it, `<Group>-<Full Name>_<participant id>`."""
    gid, group = GROUPS.get(pid, (None, "Default group"))
    if version != "4.0":
        return [f"{group.replace('_', ' ')}_{gid}" if gid else group]
    members = [p for p, *_ in PEOPLE if GROUPS.get(p, (None, "Default group"))[1] == group]
    names = dict((p, n) for p, n, _ in PEOPLE)
    return [f"{group}-{names[m]}".replace("_", " ") + f"_{m}" for m in members]


def notebook(tmp_path, name: str, code: str, reflection: str = "...") -> bytes:
    path = write_notebook(tmp_path / "work" / name / f"{ASSIGNMENT}.ipynb",
                          [Cells.answer("top_k_filter", code), Cells.reflection("reflection_sampling", reflection)])
    return path.read_bytes()


def write_zip(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


@pytest.fixture
def cli(make_course, course_config, tmp_path):
    course_config["TEAMS"] = TEAMS
    root = make_course(config=course_config)

    def run(*args):
        return main(["--course-root", str(root), *map(str, args)])
    return run


def upload_rows(path):
    return {r["Full name"]: r for r in csv.DictReader(path.open(encoding="utf-8-sig"))}


LAYOUTS = [("4.0", True), ("4.0", False), ("4.1", True), ("4.1", False)]
LAYOUT_IDS = ["4.0-folders", "4.0-flat", "4.1-folders", "4.1-flat"]


@pytest.mark.parametrize("version, folders", LAYOUTS, ids=LAYOUT_IDS)
def test_individual_download_to_filled_worksheet(cli, tmp_path, capsys, version, folders):
    at = {"1001": dt.datetime(2027, 4, 26, 10, 0, tzinfo=BERLIN),   # team01, first hand-in (wrong code)
          "1002": dt.datetime(2027, 4, 27, 23, 45, tzinfo=BERLIN),  # team01 again, on time: this one counts
          "2001": dt.datetime(2027, 4, 29, 11, 0, tzinfo=BERLIN)}   # team02, 1 day 11 h late: 2 started days
    packed = pack(write_notebook(tmp_path / "zoe" / f"{ASSIGNMENT}.ipynb", [Cells.answer("top_k_filter", WRONG)]),
                  "team01", ["s101", "s102"], tmp_path / "team01.zip")
    files = {
        entry(person("1001"), "file", "team01_01_demo.zip", version, folders): packed.read_bytes(),
        entry(person("1002"), "file", f"{ASSIGNMENT}.ipynb", version, folders): notebook(tmp_path, "jose", CORRECT),
        entry(person("2001"), "file", f"Abgabe {ASSIGNMENT}.ipynb", version, folders):
            notebook(tmp_path, "ana", CORRECT, "our reflection"),
        entry(person("2001"), "onlinetext", "onlinetext.html", version, folders): b"<p>We worked <b>together</b>.</p>",
        entry(person("2002"), "onlinetext", "onlinetext.html", version, folders): b"<p>see Ana's upload</p>",
        "../escape.ipynb": b"{}",  # a name that would leave the folder: never written
    }
    download = write_zip(tmp_path / "LLM-01-42.zip", files)
    sheet = worksheet(tmp_path / "Grades-LLM-01.csv", at)
    db = tmp_path / "course" / "gradebook.db"

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    out = capsys.readouterr().out
    assert "Zoë Brontë_1001: an earlier hand-in of team team01; the latest (2027-04-27T23:45+02:00) is graded" in out
    assert "online text without a file submission" in out and "Ben O'Dea_2002" in out
    assert not (tmp_path.parent / "escape.ipynb").exists()
    graded = {r[0] for r in sqlite3.connect(db).execute("SELECT submission_id FROM submissions")}
    assert graded == {"team01", "team02"}
    assert "-20%" in out  # team02's late penalty in the score table

    result = tmp_path / "upload.csv"
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "moodle", "--worksheet", sheet,
               "--output", result) == 0
    assert "4 participants graded, 1 without a graded hand-in" in capsys.readouterr().out
    rows = upload_rows(result)
    # 1 autograded point of 3 (the 2-point reflection waits for a grader), scaled to Moodle's 100.
    assert rows["Zoë Brontë"]["Grade"] == rows["José María Núñez"]["Grade"] == "33.33"
    assert rows["Ana Lúcia"]["Grade"] == rows["Ben O'Dea"]["Grade"] == "26.67"  # 20% late penalty
    assert "(1 before the late penalty of 20%)" in rows["Ana Lúcia"]["Feedback comments"]
    assert rows["Dara Ó Briain"]["Grade"] == "" and rows["Dara Ó Briain"]["Last modified (grade)"] == "-"

    # The online text is kept with the hand-in: the TA's reflection sheet and the feedback page show it.
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "manual", "--output", tmp_path / "manual") == 0
    manual = (tmp_path / "manual" / f"{ASSIGNMENT}_manual.html").read_text()
    assert "We worked together." in manual and "our reflection" in manual and "cannot be read any more" not in manual
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "html", "--output", tmp_path / "pages") == 0
    page = (tmp_path / "pages" / "team02.html").read_text()
    assert "We worked together." in page and f"Abgabe {ASSIGNMENT}.ipynb" in page


@pytest.mark.parametrize("version, folders", LAYOUTS, ids=LAYOUT_IDS)
def test_group_download_one_handin_per_group(cli, tmp_path, capsys, version, folders):
    at = {pid: dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN) for pid in ("1001", "1002", "2001", "2002", "3001")}
    code = {"1001": CORRECT, "2001": WRONG, "3001": CORRECT}
    files = {}
    for pid, source in code.items():
        for prefix in group_prefixes(pid, version):  # before 4.1, the same files once per member
            files[entry(prefix, "file", f"{ASSIGNMENT}.ipynb", version, folders)] = notebook(tmp_path, pid, source)
    for prefix in group_prefixes("2001", version):
        files[entry(prefix, "onlinetext", "onlinetext.html", version, folders)] = b"<p>Team 02 notes</p>"
    download = write_zip(tmp_path / "LLM-01-42.zip", files)
    sheet = worksheet(tmp_path / "Grades-LLM-01.csv", at, groups=True)
    db = tmp_path / "gradebook.db"

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    out = capsys.readouterr().out
    assert "hand-ins to check" not in out and "entries not graded" not in out, out
    graded = dict(sqlite3.connect(db).execute("SELECT submission_id, team FROM handins"))
    # Dara, in no Moodle group, handed in through "Default group": the roster says she is team03.
    assert set(graded) == {"team01", "team02", "team03"}

    result = tmp_path / "upload.csv"
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "moodle", "--worksheet", sheet,
               "--output", result) == 0
    rows = upload_rows(result)
    assert rows["Zoë Brontë"]["Grade"] == rows["José María Núñez"]["Grade"] == rows["Dara Ó Briain"]["Grade"] == "33.33"
    assert rows["Ana Lúcia"]["Grade"] == rows["Ben O'Dea"]["Grade"] == "0.00"
    assert rows["Ben O'Dea"]["Group"] == "Team 02"


def test_group_download_without_a_roster_gives_each_member_the_grade(make_course, course_config, tmp_path, capsys):
    root = make_course(config=course_config)
    files = {entry(group_prefixes("1001", "4.1")[0], "file", f"{ASSIGNMENT}.ipynb", "4.1", True):
             notebook(tmp_path, "t1", CORRECT)}
    download = write_zip(tmp_path / "d.zip", files)
    at = {"1001": dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN), "1002": dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN)}
    sheet = worksheet(tmp_path / "w.csv", at, groups=True)
    db, result = tmp_path / "gradebook.db", tmp_path / "upload.csv"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(download), "--moodle-worksheet", str(sheet),
                 "--gradebook", str(db)]) == 0
    assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(db), "--format", "moodle",
                 "--worksheet", str(sheet), "--output", str(result)]) == 0
    rows = upload_rows(result)
    # The group id 71 is no participant id: only the group's members get its grade.
    assert rows["Zoë Brontë"]["Grade"] == rows["José María Núñez"]["Grade"] == "33.33"
    assert rows["Ana Lúcia"]["Grade"] == ""


@pytest.mark.parametrize("folders", [True, False], ids=["folders", "flat"])
def test_a_renamed_second_upload_is_never_chosen_silently(cli, tmp_path, capsys, monkeypatch, folders):
    """Moodle renames a second upload of the same name to `01_demo (1).ipynb`; nothing says which is newer."""
    monkeypatch.setenv("COLUMNS", "200")  # the score table as a wide terminal shows it
    files = {entry(person("1001"), "file", f"{ASSIGNMENT}.ipynb", "4.1", folders): notebook(tmp_path, "a", WRONG),
             entry(person("1001"), "file", f"{ASSIGNMENT} (1).ipynb", "4.1", folders): notebook(tmp_path, "b", CORRECT)}
    download = write_zip(tmp_path / "d.zip", files)
    sheet = worksheet(tmp_path / "w.csv", {"1001": dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN)})
    db = tmp_path / "gradebook.db"

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 2
    captured = capsys.readouterr()
    assert (f"team01: holds 2 notebooks ({ASSIGNMENT} (1).ipynb, {ASSIGNMENT}.ipynb) and nothing says which is the "
            f"latest: not graded until you name one, `--pick 'team01=FILE'`") in captured.out
    assert "nothing to grade in" in captured.err
    assert not db.exists() or not sqlite3.connect(db).execute("SELECT * FROM submissions").fetchall()

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db,
               "--pick", f"team01={ASSIGNMENT} (1).ipynb") == 0
    out = capsys.readouterr().out
    assert f"{ASSIGNMENT} (1).ipynb" in out and "1/3" in out  # the file graded, in the score table
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "html", "--output", tmp_path / "pages") == 0
    page = (tmp_path / "pages" / "team01.html").read_text()
    assert f"{ASSIGNMENT} (1).ipynb</strong>" in page and "Graded file: <strong>" in page  # flat: with Moodle's prefix

    # The pick is kept in the course folder: a rerun grades the same file without repeating it.
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db, "--force") == 0
    assert f"{ASSIGNMENT} (1).ipynb" in capsys.readouterr().out
    picks = next(tmp_path.glob("**/picks.csv"))
    assert picks.read_text() == f"assignment,submission,file\n{ASSIGNMENT},team01,{ASSIGNMENT} (1).ipynb\n"

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db,
               "--pick", "team01=nope.ipynb") == 2
    assert "--pick names 'nope.ipynb', which it does not hold" in capsys.readouterr().out
    assert f"team01,{ASSIGNMENT} (1).ipynb" in picks.read_text(), "a pick naming no file of the hand-in is not kept"
    picks.write_text("team,file\n")
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 2
    assert "picks.csv: needs the columns assignment,submission,file; fix or remove it" in capsys.readouterr().err


def test_a_scratch_notebook_beside_the_release_one_is_named_not_hidden(cli, tmp_path, capsys):
    files = {entry(person("1001"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "a", CORRECT),
             entry(person("1001"), "file", "scratch.ipynb", "4.1", True): notebook(tmp_path, "b", WRONG)}
    db = tmp_path / "gradebook.db"
    assert cli("grade", ASSIGNMENT, write_zip(tmp_path / "d.zip", files), "--gradebook", db) == 0
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "html", "--output", tmp_path / "pages") == 0
    page = (tmp_path / "pages" / "team01.html").read_text()
    assert f"graded {ASSIGNMENT}.ipynb; also handed in, not graded: scratch.ipynb" in page


def test_a_zip_download_stays_readable_and_reruns_reuse_it(cli, tmp_path, capsys):
    files = {entry(person("1002"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True):
             notebook(tmp_path, "j", CORRECT, "a reflection to read later")}
    download = write_zip(tmp_path / "d.zip", files)
    sheet = worksheet(tmp_path / "w.csv", {"1002": dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN)})
    db = tmp_path / "course" / "gradebook.db"
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    kept = [p for p in (tmp_path / "course" / "downloads").iterdir()]
    assert len(kept) == 1 and str(kept[0]) in sqlite3.connect(db).execute("SELECT path FROM submissions").fetchone()[0]
    capsys.readouterr()
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    assert "1 unchanged submissions were not regraded" in capsys.readouterr().out
    assert [p for p in (tmp_path / "course" / "downloads").iterdir()] == kept
    download.unlink()  # the TA cleans up Downloads/: the grades and answers stay readable
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "manual", "--output", tmp_path / "manual") == 0
    assert "a reflection to read later" in (tmp_path / "manual" / f"{ASSIGNMENT}_manual.html").read_text()


def test_the_upload_is_accepted_again_and_says_points_per_question(cli, tmp_path, capsys):
    files = {entry(person("1002"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "j", CORRECT)}
    download = write_zip(tmp_path / "d.zip", files)
    sheet = worksheet(tmp_path / "w.csv", {"1002": dt.datetime(2027, 4, 27, 20, 0, tzinfo=BERLIN)})
    db, result = tmp_path / "gradebook.db", tmp_path / "upload.csv"
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    before = dt.datetime.now(BERLIN).replace(second=0, microsecond=0)
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "moodle", "--worksheet", sheet,
               "--output", result) == 0
    row = upload_rows(result)["José María Núñez"]
    # Moodle's importer skips a row whose grade changed after `Last modified (grade)` (+60 s): the time of
    # this export, not the "-" of the download, so the rows graded by an earlier upload are updated too.
    assert submission_time(row["Last modified (grade)"], BERLIN) >= before
    assert row["Feedback comments"].splitlines() == [
        "top_k_filter: 1 of 1 points", "reflection_sampling: 0 of 2 points",
        "Total: 1 of 3 points; incomplete (reflections not graded yet)."]
    assert ".html" not in row["Feedback comments"]
    assert list(upload_rows(result)["Ana Lúcia"].values()) == list(upload_rows(sheet)["Ana Lúcia"].values())


def test_a_download_with_nothing_to_grade_fails_and_says_what_it_found(cli, tmp_path, capsys):
    files = {entry(person("2002"), "onlinetext", "onlinetext.html", "4.1", True): b"<p>hi</p>"}
    assert cli("grade", ASSIGNMENT, write_zip(tmp_path / "d.zip", files), "--gradebook", tmp_path / "g.db") == 2
    captured = capsys.readouterr()
    assert "Ben O'Dea_2002_assignsubmission_onlinetext: online text without a file submission" in captured.out
    assert "nothing to grade in" in captured.err and "1 entries are no hand-ins" in captured.err


def test_worksheet_problems_are_one_message(tmp_path):
    (tmp_path / "grades.csv").write_text("student,points\na,1\n")
    with pytest.raises(MoodleError, match="not a Moodle grading worksheet: missing column\\(s\\) Identifier"):
        read_worksheet(tmp_path / "grades.csv")
    assert submission_time("Tuesday, 27 April 2027, 11:45 PM", BERLIN) == dt.datetime(2027, 4, 27, 23, 45,
                                                                                      tzinfo=BERLIN)
    assert submission_time("Tuesday, April 27, 2027, 9:05 AM", BERLIN).hour == 9
    assert submission_time("-", BERLIN) is None
    with pytest.raises(MoodleError, match="not a time Moodle writes in English"):
        submission_time("Dienstag, 27. April 2027, 23:45", BERLIN)


def _late_team02(tmp_path, status=None):
    """team02 hands in 1 day 11 h after the due date; the worksheet's Status may carry an extension."""
    at = {"2001": dt.datetime(2027, 4, 29, 11, 0, tzinfo=BERLIN)}
    files = {entry(person("2001"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "ana", CORRECT)}
    return write_zip(tmp_path / "LLM-01-42.zip", files), worksheet(tmp_path / "Grades.csv", at, status=status)


def test_an_extension_in_moodles_status_column_moves_the_due_date(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the score table on one line per hand-in
    # gradingtable.php, when downloading: the status parts joined by " - ", the extension last.
    status = {"2001": "Submitted for grading - Assignment was submitted 1 day 11 hours late - Not graded - "
                      f"Extension granted until: {moodle_time(dt.datetime(2027, 4, 30, 23, 59, tzinfo=BERLIN))}"}
    download, sheet = _late_team02(tmp_path, status)
    db = tmp_path / "course" / "gradebook.db"
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    out = capsys.readouterr().out
    assert "-20%" not in out and "due 2027-04-30 23:59 (extension)" in out
    result = tmp_path / "upload.csv"
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "moodle", "--worksheet", sheet,
               "--output", result) == 0
    assert upload_rows(result)["Ana Lúcia"]["Grade"] == "33.33"  # no late penalty
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "html", "--output", tmp_path / "pages") == 0
    assert "due date extended to 2027-04-30T23:59+02:00 (Moodle)" in (tmp_path / "pages" / "team02.html").read_text()


def test_extensions_from_a_csv_and_an_id_that_matches_nothing(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    download, sheet = _late_team02(tmp_path)
    extensions = tmp_path / "extensions.csv"
    extensions.write_text("who,due\nteam02,2027-04-29 12:00\nteam99,2027-05-01 00:00\n")
    db = tmp_path / "course" / "gradebook.db"
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db,
               "--extensions", extensions) == 0
    out = capsys.readouterr().out
    assert "-20%" not in out and "due 2027-04-29 12:00 (extension)" in out
    assert "team99: has an extension in --extensions but no hand-in to grade" in out
    extensions.write_text("who,due\nteam02,next friday\n")
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db,
               "--extensions", extensions) == 2
    assert "line 2: 'next friday' is not a date (YYYY-MM-DD HH:MM)" in capsys.readouterr().err
    # Without the extension the same hand-in is late again: the due date is the hand-in's, not the grade's.
    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    assert "-20%" in capsys.readouterr().out


def test_the_extension_is_read_from_any_place_of_the_status_column():
    until = dt.datetime(2027, 5, 4, 23, 59, tzinfo=BERLIN)
    for status in (f"Extension granted until: {moodle_time(until)}",
                   f"No submission - Extension granted until: {moodle_time(until)}",
                   f"Submitted for grading - Graded - Extension granted until: {moodle_time(until)} - In review"):
        assert extension_until(status, BERLIN) == until, status
    assert extension_until("Submitted for grading - Not graded", BERLIN) is None
