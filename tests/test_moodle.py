"""Moodle round trip: its download and grading worksheet in, the filled worksheet out."""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import zipfile
import zoneinfo

import pytest

from autograder.cli import main
from autograder.exports.moodle import MoodleError, read_worksheet, submission_time
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
HEADER = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade", "Grade can be changed",
          "Last modified (submission)", "Last modified (grade)", "Feedback comments"]


def moodle_time(moment: dt.datetime) -> str:
    """As Moodle writes it in English: 'Tuesday, 27 April 2027, 11:45 PM'."""
    return f"{moment:%A}, {moment.day} {moment:%B %Y}, {int(moment.strftime('%I'))}:{moment:%M %p}"


def worksheet_rows():
    at = {
        "1001": dt.datetime(2027, 4, 26, 10, 0, tzinfo=BERLIN),   # team01, first hand-in (wrong code)
        "1002": dt.datetime(2027, 4, 27, 23, 45, tzinfo=BERLIN),  # team01 again, on time: this one counts
        "2001": dt.datetime(2027, 4, 29, 11, 0, tzinfo=BERLIN),   # team02, 1 day 11 h late: 2 started days
    }
    people = [("1001", "Zoë Brontë", "zoe@uni.example"), ("1002", "José María Núñez", "jose@uni.example"),
              ("2001", "Ana Lúcia", "ana@uni.example"), ("2002", "Ben O'Dea", "ben@uni.example"),
              ("3001", "Dara Ó Briain", "dara@uni.example")]
    return [[f"Participant {pid}", name, email,
             "Submitted for grading - Graded" if pid in at else "No submission - Not graded", "", "100.00", "Yes",
             moodle_time(at[pid]) if pid in at else "-", "-", ""] for pid, name, email in people]


def build_download(tmp_path):
    """A Moodle 'Download all submissions' zip and its grading worksheet (UTF-8 with a byte order mark)."""
    def handin(name, code):
        return write_notebook(tmp_path / "work" / name / f"{ASSIGNMENT}.ipynb",
                              [Cells.answer("top_k_filter", code), Cells.reflection("reflection_sampling", "...")])

    packed = pack(handin("zoe", WRONG), "team01", ["s101", "s102"], tmp_path / "work" / "team01.zip")
    download = tmp_path / "moodle_download.zip"
    with zipfile.ZipFile(download, "w") as z:
        z.write(packed, "Zoë Brontë_1001_assignsubmission_file_/team01_01_demo.zip")
        z.write(handin("jose", CORRECT), f"José María Núñez_1002_assignsubmission_file_/{ASSIGNMENT}.ipynb")
        z.write(handin("ana", CORRECT), f"Ana Lúcia_2001_assignsubmission_file_/Abgabe {ASSIGNMENT}.ipynb")
        z.writestr("Ben O'Dea_2002_assignsubmission_onlinetext_/onlinetext.html", "<p>see Ana's upload</p>")
        z.writestr("../escape.ipynb", "{}")  # a name that would leave the folder: never written
        link = zipfile.ZipInfo("Eve Mallory_4001_assignsubmission_file_/01_demo.ipynb")
        link.external_attr = (0o120777 << 16)  # a symbolic link to the solution: never written
        z.writestr(link, "/course/source/01_demo/01_demo.ipynb")
    sheet = tmp_path / "Grades-LLM-01.csv"
    with sheet.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(worksheet_rows())
    return download, sheet


def test_moodle_download_to_filled_worksheet(make_course, course_config, tmp_path, capsys):
    course_config["TEAMS"] = TEAMS
    root = make_course(config=course_config)
    download, sheet = build_download(tmp_path)
    db = tmp_path / "gradebook.db"

    def cli(*args):
        return main(["--course-root", str(root), *map(str, args)])

    assert cli("grade", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--gradebook", db) == 0
    out = capsys.readouterr().out
    assert "Zoë Brontë_1001: an earlier hand-in of team team01; the latest (2027-04-27T23:45+02:00) is graded" in out
    assert f"{download}/Ben O'Dea_2002_assignsubmission_onlinetext_: not a Moodle file submission" in out
    assert not (tmp_path.parent / "escape.ipynb").exists()
    graded = {r[0] for r in sqlite3.connect(db).execute("SELECT submission_id FROM submissions")}
    assert graded == {"team01", "team02"}
    assert "Eve Mallory" not in out  # her link was never extracted, so there is no entry of hers to list

    result = tmp_path / "upload.csv"
    assert cli("export", ASSIGNMENT, "--gradebook", db, "--format", "moodle", "--worksheet", sheet,
               "--output", result) == 0
    assert "4 participants graded, 1 without a graded hand-in" in capsys.readouterr().out
    assert result.read_bytes().startswith(b"\xef\xbb\xbf")  # as Moodle wrote it
    rows = list(csv.DictReader(result.open(encoding="utf-8-sig")))
    assert list(rows[0]) == HEADER
    by_name = {r["Full name"]: r for r in rows}
    # 1 autograded point of 3 (the 2-point reflection waits for a grader), scaled to Moodle's 100.
    assert by_name["Zoë Brontë"]["Grade"] == by_name["José María Núñez"]["Grade"] == "33.33"
    assert by_name["Ana Lúcia"]["Grade"] == by_name["Ben O'Dea"]["Grade"] == "26.67"  # 20% late penalty
    assert "(1 before the late penalty of 20%)" in by_name["Ana Lúcia"]["Feedback comments"]
    assert "reflections not graded yet" in by_name["Zoë Brontë"]["Feedback comments"]
    assert by_name["Dara Ó Briain"]["Grade"] == "" and by_name["Dara Ó Briain"]["Feedback comments"] == ""
    assert [r["Identifier"] for r in rows] == [r[0] for r in worksheet_rows()]


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
