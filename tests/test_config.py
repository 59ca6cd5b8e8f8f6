"""course_config.py: each mistake is one message naming the file and the field; valid configs merge defaults."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import ASSIGNMENT

from autograder.cli import main
from autograder.course.config import ConfigError, Tolerance, find_course_root, load_course


def second_assignment(config: dict, **changes) -> None:
    config["ASSIGNMENTS"].append({**config["ASSIGNMENTS"][0], **changes})


MISTAKES = {
    "unknown course key": (
        lambda c: c["COURSE"].update(colour="blue"), "COURSE.colour: unknown key"),
    "unknown default key": (
        lambda c: c["DEFAULTS"].update(tolerance={}), "DEFAULTS.tolerance: unknown key"),
    "unknown assignment key": (
        lambda c: c["ASSIGNMENTS"][0].update(deadline="2027-05-01 12:00"), "ASSIGNMENTS[0].deadline: unknown key"),
    "missing required key": (
        lambda c: c["ASSIGNMENTS"][0].pop("points"), "ASSIGNMENTS[0].points: missing"),
    "missing source notebook": (
        lambda c: second_assignment(c, id="02_missing"),
        "ASSIGNMENTS[1].id: no source notebook found in source/02_missing/"),
    "bad date": (
        lambda c: c["ASSIGNMENTS"][0].update(due="next friday"),
        "ASSIGNMENTS[0].due: 'next friday' is not a date (YYYY-MM-DD HH:MM)"),
    "date without time": (
        lambda c: c["ASSIGNMENTS"][0].update(due="2027-04-27"), "ASSIGNMENTS[0].due: '2027-04-27' is not a date"),
    "bad timezone": (
        lambda c: c["COURSE"].update(timezone="Mars/Olympus"),
        "COURSE.timezone: 'Mars/Olympus' is not a known time zone"),
    "negative tolerance": (
        lambda c: c["ASSIGNMENTS"][0].update(tolerances={"fp32": {"rtol": -1e-4, "atol": 1e-5}}),
        "ASSIGNMENTS[0].tolerances.fp32.rtol: -0.0001 must be non-negative"),
    "tolerance that is no number": (
        lambda c: c["DEFAULTS"]["tolerances"]["bf16"].update(atol="loose"),
        "ASSIGNMENTS[0].tolerances.bf16.atol: 'loose' is not a number"),
    "tolerance without atol": (
        lambda c: c["ASSIGNMENTS"][0].update(tolerances={"fp16": {"rtol": 1e-3}}),
        "ASSIGNMENTS[0].tolerances.fp16: must be a dict with exactly 'rtol' and 'atol'"),
    "unknown dtype profile": (
        lambda c: c["DEFAULTS"]["tolerances"].update(fp8={"rtol": 0.1, "atol": 0.1}),
        "ASSIGNMENTS[0].tolerances.fp8: unknown dtype profile"),
    "duplicate id": (
        lambda c: second_assignment(c), f"ASSIGNMENTS[1].id: duplicate assignment id '{ASSIGNMENT}'"),
    "late policy per minute": (
        lambda c: c["DEFAULTS"]["late_policy"].update(per="minute"),
        "ASSIGNMENTS[0].late_policy.per: 'minute' is not one of ['day', 'hour']"),
    "late cap above 100": (
        lambda c: c["DEFAULTS"]["late_policy"].update(cap_percent=150),
        "ASSIGNMENTS[0].late_policy.cap_percent: must be at most 100"),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_each_mistake_names_file_and_field(make_course, course_config, case):
    break_config, expected = MISTAKES[case]
    break_config(course_config)
    with pytest.raises(ConfigError) as caught:
        load_course(make_course(config=course_config))
    assert str(caught.value).startswith(f"course_config.py: {expected}")


@pytest.mark.parametrize("text, expected", [
    ("COURSE = {}\n1 / 0\n", "course_config.py: could not be executed: ZeroDivisionError: division by zero"),
    ("COURSE = {\n", "course_config.py: could not be executed: SyntaxError: "),
    ("ASSIGNMENTS = []\n", "course_config.py: COURSE: missing or not a dict"),
])
def test_config_that_raises_or_lacks_course(make_course, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_course(make_course(config=text))
    assert str(caught.value).startswith(expected)


def test_assignment_overrides_merge_into_defaults(make_course, course_config):
    course_config["ASSIGNMENTS"][0]["tolerances"] = {"fp16": {"rtol": 1e-2, "atol": 1e-3}}
    assignment = load_course(make_course(config=course_config)).get(ASSIGNMENT)
    assert assignment.tolerances["fp16"] == Tolerance(1e-2, 1e-3)
    assert assignment.tolerances["fp32"] == Tolerance(1e-4, 1e-5)
    assert assignment.due == dt.datetime(2027, 4, 27, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert assignment.source_notebooks() == [assignment.source_dir / f"{ASSIGNMENT}.ipynb"]


@pytest.mark.parametrize("days_late, percent", [(0, 0), (0.01, 10), (1.0, 10), (1.5, 20), (30, 50)])
def test_late_penalty_counts_started_days_and_caps(assignment, days_late, percent):
    assert assignment.late_policy.penalty_percent(days_late) == percent


@pytest.mark.parametrize("days_late, percent", [(0, 0), (1 / 24, 10 / 24), (1.01 / 24, 20 / 24), (1.5, 15),
                                                (30, 50)])
def test_late_penalty_per_started_hour(make_course, course_config, days_late, percent):
    course_config["DEFAULTS"]["late_policy"]["per"] = "hour"
    policy = load_course(make_course(config=course_config)).get(ASSIGNMENT).late_policy
    assert policy.penalty_percent(days_late) == pytest.approx(percent)


def test_course_root_is_found_upwards_or_from_the_environment(make_course, tmp_path, monkeypatch):
    root = make_course()
    monkeypatch.delenv("AUTOGRADER_COURSE_ROOT", raising=False)
    assert find_course_root(root / "source" / ASSIGNMENT) == root
    monkeypatch.setenv("AUTOGRADER_COURSE_ROOT", str(root))
    assert find_course_root(tmp_path) == root


def test_no_course_root_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOGRADER_COURSE_ROOT", raising=False)
    with pytest.raises(ConfigError, match="no course_config.py found in"):
        find_course_root(tmp_path)


def test_cli_reports_a_config_error_in_one_line_with_status_2(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0]["due"] = "tomorrow"
    root = make_course(config=course_config)
    assert main(["--course-root", str(root), "release", "--check"]) == 2
    err = capsys.readouterr().err
    assert err == ("autograder: error: course_config.py: ASSIGNMENTS[0].due: "
                   "'tomorrow' is not a date (YYYY-MM-DD HH:MM)\n")
    assert not (root / "release").exists()


def test_docs_authoring_tables_every_config_key_the_loader_knows():
    """docs/authoring.md's table of course_config.py keys names exactly the keys that load_course accepts."""
    from autograder.course import config

    docs = (Path(__file__).resolve().parents[1] / "docs" / "authoring.md").read_text()
    table = docs.split("## `course_config.py`")[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| `")]
    documented = {(where.split(",")[0].strip("`").split("[")[0], key.strip("`")) for where, key, *_ in rows}
    known = ({("COURSE", k) for k in config._COURSE_KEYS | config._OPTIONAL_COURSE_KEYS}
             | {("ASSIGNMENTS", k) for k in config._ASSIGNMENT_KEYS} | {("TEAMS", "–")})
    assert documented == known
    defaults = {key.strip("`") for where, key, *_ in rows if "`DEFAULTS`" in where}
    assert defaults == config._DEFAULT_KEYS
