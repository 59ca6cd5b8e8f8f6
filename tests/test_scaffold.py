"""`autograder new`: an assignment that verifies, releases and grades from its first minute."""

from __future__ import annotations

import ast

import pytest
from conftest import ASSIGNMENT

from autograder.authoring.scaffold import _with_entry
from autograder.cli import main
from autograder.course.config import load_course

NEW = "02_new"


def snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


@pytest.mark.slow
def test_a_new_assignment_verifies_releases_and_grades(make_course, course_config, tmp_path, capsys):
    course_config["ASSIGNMENTS"][0]["points"] = 1
    root = make_course(config=course_config)
    assert main(["--course-root", str(root), "new", NEW, "--title", "Norms", "--due", "2027-07-01 23:59"]) == 0
    out = capsys.readouterr().out
    for rel in (f"source/{NEW}/{NEW}.ipynb", f"source/{NEW}/public_checks.py", f"grader_tests/{NEW}/test_example.py",
                f"samples/{NEW}/correct.ipynb", f"samples/{NEW}/expected.json", f"docs/mistakes/{NEW}.md",
                "course_config.py", f"release/{NEW}/{NEW}.ipynb"):
        assert f"wrote {rel}\n" in out and (root / rel).is_file(), rel
    new = load_course(root).get(NEW)
    assert (new.title, new.points, new.due.strftime("%Y-%m-%d %H:%M")) == ("Norms", 1, "2027-07-01 23:59")
    assert list(load_course(root).assignments) == [ASSIGNMENT, NEW]

    assert main(["--course-root", str(root), "verify", "--samples", "--mutants", NEW]) == 0
    assert main(["--course-root", str(root), "release", NEW]) == 0
    assert main(["--course-root", str(root), "release", "--no-verify", ASSIGNMENT]) == 0
    assert main(["--course-root", str(root), "release", "--check"]) == 0
    capsys.readouterr()
    db = tmp_path / "gradebook.db"
    assert main(["--course-root", str(root), "grade", NEW, str(root / "samples" / NEW), "--gradebook", str(db)]) == 0
    table = capsys.readouterr().out
    assert "correct" in table and "1/1" in table and "mean_over_rows" in table and "0/1" in table
    assert "not graded" not in table and "expected.json" not in table


@pytest.mark.parametrize("taken", ["config", f"samples/{NEW}", f"docs/mistakes/{NEW}.md"])
def test_new_refuses_an_id_in_use_and_writes_nothing(make_course, course_config, capsys, taken):
    if taken == "config":
        course_config["ASSIGNMENTS"].append({**course_config["ASSIGNMENTS"][0], "id": NEW})
    root = make_course(config=course_config)
    if taken == "config":
        (root / "source" / NEW).mkdir()
        (root / "source" / NEW / f"{NEW}.ipynb").write_bytes((root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes())
    else:
        (root / taken).parent.mkdir(parents=True, exist_ok=True)
        (root / taken).mkdir() if "." not in taken else (root / taken).write_text("mine")
    before = snapshot(root)
    assert main(["--course-root", str(root), "new", NEW, "--title", "T"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autograder: error: ") and err.count("\n") == 1
    assert (f"{taken} already exists" in err) if taken != "config" else ("already declares 02_new" in err)
    assert snapshot(root) == before


def test_new_refuses_an_id_that_is_no_folder_name(make_course, capsys):
    root = make_course()
    before = snapshot(root)
    assert main(["--course-root", str(root), "new", "../x", "--title", "T"]) == 2
    assert "is no assignment id" in capsys.readouterr().err and snapshot(root) == before


ENTRY = '{"id": "new", "points": 1}'


@pytest.mark.parametrize("config", [
    'ASSIGNMENTS = [\n    {"id": "a"},  # first\n]\nX = 1\n',
    'ASSIGNMENTS = [\n    {"id": "a"}  # no comma, a comment, then ]\n]\n',
    'ASSIGNMENTS = [{"id": "a"}]  # one line\n',
    'ASSIGNMENTS = [{"id": "é"}, {"id": "a"}\n    ]\n',
])
def test_the_entry_is_appended_to_the_assignments_list_as_written(config):
    text = _with_entry(config, ENTRY)
    assert text.startswith(config.split("ASSIGNMENTS")[0])
    value = next(n.value for n in ast.parse(text).body if isinstance(n, ast.Assign) and n.targets[0].id == "ASSIGNMENTS")
    assert ast.literal_eval(value)[-1] == {"id": "new", "points": 1} and ast.literal_eval(value)[-2]["id"] == "a"
    assert text.endswith(config[config.rindex("]"):])  # what follows the list is kept
