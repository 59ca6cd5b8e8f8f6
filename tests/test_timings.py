"""`grade --profile`: each stage's time lands in its own stage, the student's in the student's."""

from __future__ import annotations

import json
import re
import time

import nbformat
import torch

from autograder.grading import timings
from autograder.cli import main
from autograder.grading.testing import assert_close
from conftest import ASSIGNMENT, write_course, write_notebook

SUITE = '''import pytest
import torch
from autograder.grading.testing import assert_close, reference


@reference
def doubled(x):
    return x * 2


@pytest.mark.points(1)
def test_double(submission):
    x = torch.arange(6.0)
    assert_close(submission.double(x), doubled(x), what="double")
'''
CORRECT = "def double(x):\n    return x * 2\n"
ENDLESS = "def double(x):\n    while True:\n        pass\n"
CALL_TIMEOUT_S = 2


def test_profile_puts_an_endless_loop_in_the_students_time_and_covers_every_submission(tmp_path, capsys):
    root = write_course(tmp_path, CORRECT, {"test_double.py": SUITE}, points=1, call_timeout_s=CALL_TIMEOUT_S)
    batch = tmp_path / "batch"
    for team, code in {"good": CORRECT, "loops": ENDLESS}.items():
        write_notebook(batch / f"{team}.ipynb", [nbformat.v4.new_code_cell(code)])
    profile = tmp_path / "profile.json"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(tmp_path / "g.db"),
                 "--jobs", "1", "--profile", str(profile)]) == 0
    report = json.loads(profile.read_text())
    good, loops = report["submissions"]["good"], report["submissions"]["loops"]
    assert set(good["stages"]) | set(loops["stages"]) <= set(timings.STAGES)
    assert loops["stages"]["student's calls (sandbox)"] >= CALL_TIMEOUT_S
    assert good["stages"]["student's calls (sandbox)"] < 1
    for stage in ("notebook read and extraction", "pytest collection", "sandbox fork", "isolation set-up",
                  "hidden tests' own code", "comparisons", "reference values", "gradebook write"):
        assert good["stages"][stage] > 0, stage
    # One worker: its first submission carries the batch's start, the other none of it.
    assert sum("forkserver start" in entry["stages"] for entry in (good, loops)) == 1
    # A submission's stages are its own grading time, which lies inside its span.
    for entry in (good, loops):
        began, ended = entry["span"]
        own = sum(v for k, v in entry["stages"].items() if k not in timings.BATCH_STAGES)
        assert own <= ended - began + 0.05
    assert report["command_s"] >= loops["stages"]["student's calls (sandbox)"]
    # The terminal gets the gist: the endless loop makes the student's calls the largest stage.
    assert re.search(r"per submission \d+\.\d+ s, most in student's calls \(sandbox\) \d", capsys.readouterr().err)


def test_a_recursive_comparison_is_counted_once():
    stages = timings.Stages()
    value = {"a": torch.ones(3), "b": {"c": [torch.zeros(2), torch.ones(2)]}}
    with timings.recording(stages):
        begin = time.perf_counter()
        assert_close(value, value)
        elapsed = time.perf_counter() - begin
    assert 0 < stages["comparisons"] <= elapsed


def test_figures_from_the_sandbox_are_clamped_to_what_the_grader_measured():
    assert timings.reported(1e9, 2.0) == 2.0
    assert timings.reported(-5, 2.0) == 0.0
    assert timings.reported("lots", 2.0) == 0.0
    assert timings.reported(float("nan"), 2.0) == 0.0 and timings.reported(float("inf"), 2.0) == 0.0
    assert timings.reported(0.5, 2.0) == 0.5


def test_a_profile_that_cannot_be_written_is_refused_before_the_batch(tmp_path, capsys):
    root = write_course(tmp_path, CORRECT, {"test_double.py": SUITE}, points=1)
    write_notebook(tmp_path / "batch" / "good.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    db = tmp_path / "g.db"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(tmp_path / "batch"), "--gradebook", str(db),
                 "--profile", str(tmp_path / "missing" / "profile.json")]) == 2
    assert "cannot write a file in" in capsys.readouterr().err and not db.exists()
