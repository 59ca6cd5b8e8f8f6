"""Teams and reflections end to end: pack -> grade -> per-student export; manual sheet -> import -> totals."""

from __future__ import annotations

import csv
import sqlite3

import pytest

from autograder.cli import main
from autograder.course.config import ConfigError, load_course
from conftest import ASSIGNMENT, CORRECT, Cells, write_notebook

pytestmark = pytest.mark.slow

TEAMS = [
    {"id": "team01", "members": [{"id": "s101", "name": "Zoë Brontë", "email": "zoe@uni.example"},
                                 {"id": "s102", "name": "José Núñez"}]},
    {"id": "team02", "members": [{"id": "s201", "name": "Ana Lúcia"}, {"id": "s202", "name": "Ben Ode"},
                                 {"id": "s203", "name": "Chloé Ñ"}]},
    {"id": "team03", "members": [{"id": "s301", "name": "Dara Ó Briain"}]},
]
WRONG = CORRECT.replace("logits < kth", "logits <= kth")  # filters the k-th largest too


def handin(path, code: str, reflection: str):
    return write_notebook(path, [Cells.answer("top_k_filter", code), Cells.reflection("reflection_sampling", reflection)])


def cli(root, *args) -> int:
    return main(["--course-root", str(root), *map(str, args)])


@pytest.fixture
def team_course(make_course, course_config):
    course_config["TEAMS"] = TEAMS
    return make_course(config=course_config)


def test_a_roster_with_a_student_in_two_teams_or_too_big_a_team_is_refused(make_course, course_config):
    course_config["TEAMS"] = [TEAMS[0], {"id": "team09", "members": [{"id": "s101", "name": "Zoë again"}]}]
    with pytest.raises(ConfigError, match="student s101 .* is in two teams, team01 and team09"):
        load_course(make_course(config=course_config))
    course_config["TEAMS"] = [{"id": "big", "members": [{"id": f"s{i}", "name": f"N{i}"} for i in range(4)]}]
    with pytest.raises(ConfigError, match="team big has 4 members; teams have at most 3"):
        load_course(make_course(config=course_config))


def test_a_roster_csv_is_read_with_accents(make_course, course_config):
    course_config["TEAMS"] = "roster.csv"
    root = make_course(config=course_config)
    (root / "roster.csv").write_text("team,student_id,name,email\nteam01,s101,Zoë Brontë,zoe@uni.example\n"
                                     "team01,s102,José Núñez,\n", encoding="utf-8")
    roster = load_course(root).roster
    assert roster.team_of("s102").id == "team01"
    assert roster.find(name="ZOË  BRONTË").id == "s101" and roster.find(email="ZOE@uni.example").id == "s101"
    (root / "roster.csv").write_text("group,id\nteam01,s101\n")
    with pytest.raises(ConfigError, match="missing column\\(s\\) name, student_id, team"):
        load_course(root)


def test_pack_grade_and_one_row_per_student(team_course, tmp_path, capsys):
    root, batch, db = team_course, tmp_path / "lms", tmp_path / "gradebook.db"
    nb = handin(tmp_path / "team01" / f"{ASSIGNMENT}.ipynb", CORRECT, "answer of team01")
    assert cli(root, "pack", nb, "--team", "team01", "--output", batch / "team01.zip") == 0
    stranger = handin(tmp_path / "x" / f"{ASSIGNMENT}.ipynb", CORRECT, "who?")
    assert cli(root, "pack", stranger, "--team", "team99", "--members", "s999") == 2  # the roster knows no team99
    assert "team team99 is not on the course roster" in capsys.readouterr().err
    # Packed elsewhere (no roster there): an unknown team, and team03 claiming a student of team02.
    assert cli(tmp_path / "nowhere", "pack", stranger, "--team", "team99", "--members", "s999",
               "--output", batch / "odd.zip") == 2  # --course-root given but absent: a config error
    from autograder.student.packing import pack
    pack(stranger, "team99", ["s999"], batch / "odd.zip")
    pack(handin(tmp_path / "t3" / f"{ASSIGNMENT}.ipynb", CORRECT, "t3"), "team03", ["s301", "s201"],
         batch / "team03.zip")
    # In the folder the LMS made for team02, an archive that claims team01: it stays team02's and
    # cannot replace team01's grade.
    pack(handin(tmp_path / "t2" / f"{ASSIGNMENT}.ipynb", WRONG, "t2"), "team01", ["s101"],
         batch / "team02" / "team01.zip")
    capsys.readouterr()

    assert cli(root, "grade", ASSIGNMENT, batch, "--gradebook", db) == 0
    out = capsys.readouterr().out
    assert "odd: names team team99, which the roster does not know" in out
    assert "lists student s201 as a member of team03, but the roster has them in team02" in out
    assert "team02: packed for team team01, but handed in as team02: graded for team02" in out
    ids = sorted(r[0] for r in sqlite3.connect(db).execute("SELECT submission_id FROM submissions"))
    assert ids == ["odd", "team01", "team02", "team03"]  # packed as team01.zip etc.: keyed by the team it names

    assert cli(root, "export", ASSIGNMENT, "--gradebook", db, "--output", tmp_path / "grades.csv") == 0
    students = {r["student_id"]: r for r in csv.DictReader((tmp_path / "grades_students.csv").open(encoding="utf-8"))}
    assert sorted(students) == ["s101", "s102", "s201", "s202", "s203", "s301"]  # roster only: s999 gets nothing
    assert students["s101"]["name"] == "Zoë Brontë" and students["s101"]["team"] == "team01"
    assert students["s101"]["total"] == students["s102"]["total"] == "1"
    assert students["s201"]["total"] == "0" and students["s301"]["total"] == "1"
    assert students["s101"]["possible"] == "3"  # one autograded point and the 2-point reflection
    assert students["s101"]["status"] == "incomplete (reflections not graded yet)"


def test_manual_sheet_import_totals_and_a_regrade_keeps_the_points(team_course, tmp_path, capsys):
    root, batch, db = team_course, tmp_path / "lms", tmp_path / "gradebook.db"
    handin(batch / "team01" / f"{ASSIGNMENT}.ipynb", CORRECT, "Top-k is fixed, top-p adapts.")
    handin(batch / "team02" / f"{ASSIGNMENT}.ipynb", WRONG, "No idea.")
    assert cli(root, "grade", ASSIGNMENT, batch, "--gradebook", db) == 0
    sheets = tmp_path / "manual"
    assert cli(root, "export", ASSIGNMENT, "--gradebook", db, "--format", "manual", "--output", sheets) == 0
    page = (sheets / f"{ASSIGNMENT}_manual.html").read_text(encoding="utf-8")
    assert "Top-k is fixed, top-p adapts." in page and "No idea." in page
    assert "Top-k keeps a fixed number of candidates" in page  # the model answer next to it
    sheet = sheets / f"{ASSIGNMENT}_manual.csv"
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert [(r["submission"], r["grade_id"], r["points_possible"], r["points"]) for r in rows] == [
        ("team01", "reflection_sampling", "2", ""), ("team02", "reflection_sampling", "2", "")]

    def write(points: dict, extra=()):
        with sheet.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["submission", "grade_id", "points_possible", "points", "comment", "grader"])
            for (sid, gid), p in points.items():
                w.writerow([sid, gid, "2", p, "clear" if sid == "team01" else "", "Tom TA" if sid == "team01" else ""])
            w.writerows(extra)

    before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM manual_scores").fetchone()
    write({("team01", "reflection_sampling"): "1,5", ("team02", "reflection_sampling"): "2.5",
           ("team77", "reflection_sampling"): "1", ("team02", "reflection_x"): "abc"})
    assert cli(root, "import-manual", ASSIGNMENT, sheet, "--gradebook", db) == 2
    err = capsys.readouterr().err
    assert "3 problem(s); nothing was recorded" in err and err.count("autograder: error") == 1
    assert "line 3 (team02, reflection_sampling): 2.5 points is outside 0..2" in err
    assert "line 4 (team77, reflection_sampling): no submission 'team77' in the gradebook" in err
    assert "line 5 (team02, reflection_x): 01_demo has no hand-graded cell 'reflection_x'" in err
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM manual_scores").fetchone() == before == (0,)
    write({("team01", "reflection_sampling"): "not a number"})
    assert cli(root, "import-manual", ASSIGNMENT, sheet, "--gradebook", db) == 2
    assert "'not a number' is not a number of points" in capsys.readouterr().err

    write({("team01", "reflection_sampling"): "1,5", ("team02", "reflection_sampling"): "0"})
    assert cli(root, "import-manual", ASSIGNMENT, sheet, "--gradebook", db, "--grader", "Ida") == 0
    graders = dict(sqlite3.connect(db).execute("SELECT submission_id, grader FROM manual_scores"))
    assert graders == {"team01": "Tom TA", "team02": "Ida"}

    def totals():
        assert cli(root, "export", ASSIGNMENT, "--gradebook", db, "--output", tmp_path / "g.csv") == 0
        return {r["submission"]: (r["reflection_sampling"], r["total"], r["possible"], r["status"])
                for r in csv.DictReader((tmp_path / "g.csv").open(encoding="utf-8"))}

    assert totals() == {"team01": ("1.5", "2.5", "3", "graded"), "team02": ("0", "0", "3", "graded")}
    assert cli(root, "grade", ASSIGNMENT, batch, "--gradebook", db, "--force") == 0  # regrade the autograded part
    assert totals() == {"team01": ("1.5", "2.5", "3", "graded"), "team02": ("0", "0", "3", "graded")}
    pages = tmp_path / "pages"
    assert cli(root, "export", ASSIGNMENT, "--gradebook", db, "--format", "html", "--output", pages) == 0
    assert "graded by hand: 1.5 of 2; clear" in (pages / "team01.html").read_text(encoding="utf-8")
    assert cli(root, "export", ASSIGNMENT, "--gradebook", db, "--format", "summary", "--output", pages) == 0
    assert "Reflections not graded yet" not in (pages / "summary.html").read_text(encoding="utf-8")


def test_the_tas_loop_on_the_bundled_01_samples(tmp_path, capsys):
    """grade -> reflections by hand -> one row per student, on the real 01_intro and three of its samples."""
    import json
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "course"
    root.mkdir()
    for folder in ("source", "grader_tests"):
        (root / folder).symlink_to(repo / folder)
    teams = [{"id": f"team0{i}", "members": [{"id": f"s{i}01", "name": f"Student {i}a"},
                                             {"id": f"s{i}02", "name": f"Student {i}b"}]} for i in (1, 2, 3, 4)]
    (root / "course_config.py").write_text((repo / "course_config.py").read_text() + f"\nTEAMS = {teams!r}\n")
    samples = {"team01": "correct", "team02": "top_p_drops_top_token", "team03": "raises"}
    expected = json.loads((repo / "samples" / "01_intro" / "expected.json").read_text())
    for team, sample in samples.items():
        shutil.copy(repo / "samples" / "01_intro" / f"{sample}.ipynb", tmp_path / f"{sample}.ipynb")
        assert cli(root, "pack", tmp_path / f"{sample}.ipynb", "--team", team, "--output",
                   tmp_path / "moodle" / f"{team}.zip") == 0
    db = tmp_path / "gradebook.db"
    assert cli(root, "grade", "01_intro", tmp_path / "moodle", "--gradebook", db) == 0
    sheets = tmp_path / "manual"
    assert cli(root, "export", "01_intro", "--gradebook", db, "--format", "manual", "--output", sheets) == 0
    sheet = sheets / "01_intro_manual.csv"
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert {r["grade_id"] for r in rows} == {"reflection_top_p_vs_top_k"} and len(rows) == 3
    for r in rows:
        r["points"] = {"team01": "2", "team02": "1", "team03": ""}[r["submission"]]
    with sheet.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli(root, "import-manual", "01_intro", sheet, "--gradebook", db) == 0
    assert cli(root, "export", "01_intro", "--gradebook", db, "--output", tmp_path / "grades.csv") == 0
    students = {r["student_id"]: r for r in csv.DictReader((tmp_path / "grades_students.csv").open(encoding="utf-8"))}
    for team, sample, reflection in (("team01", "correct", 2), ("team02", "top_p_drops_top_token", 1)):
        for member in ("01", "02"):
            row = students[f"s{team[-1]}{member}"]
            assert float(row["total"]) == expected[sample]["points"] + reflection
            assert row["possible"] == "22" and row["status"] == "graded"
    assert float(students["s301"]["total"]) == expected["raises"]["points"]
    assert students["s301"]["status"] == "incomplete (reflections not graded yet)"
    assert students["s401"]["status"] == "no hand-in" and students["s401"]["total"] == ""


def test_pack_runs_validate_first_and_keeps_its_findings(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from autograder.grading.handins import read_manifest

    release = Path(__file__).resolve().parents[1] / "release" / "01_intro"
    notebook = tmp_path / "01_intro.ipynb"
    shutil.copy(release / "01_intro.ipynb", notebook)  # the unsolved release: every task still missing
    assert main(["pack", str(notebook), "--team", "team07", "--members", "s1,s2", "--no-checks"]) == 0
    out = capsys.readouterr().out
    assert "problem(s) that cost points whatever your results" in out
    validation = read_manifest(tmp_path / "team07_01_intro.zip")["validation"]
    assert validation["checks"] is None and any("greedy_generate" in p for p in validation["problems"])


def test_pack_refuses_a_team_id_that_would_name_another_folder_before_validating(tmp_path, capsys):
    notebook = handin(tmp_path / f"{ASSIGNMENT}.ipynb", CORRECT, "answer")
    assert main(["pack", str(notebook), "--team", "../team01", "--members", "s1"]) == 2
    out, err = capsys.readouterr()
    assert err == "autograder: error: '../team01' is not a team id\n"
    assert out == ""  # said at once: validate did not run
    assert not list(tmp_path.parent.glob("*.zip")) and not list(tmp_path.glob("*.zip"))
