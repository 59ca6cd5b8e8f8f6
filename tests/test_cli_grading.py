"""The TA's and the instructor's commands end to end on a small course: grade, export, verify, release."""

from __future__ import annotations

import csv
import json
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder.cli import _print_scores, main
from autograder.course.gradebook import Gradebook, SubmissionResult
from conftest import ASSIGNMENT, CORRECT, SOLUTION_LINE, demo_cells, write_notebook

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

def test_grade_records_every_submission_and_export_writes_one_row_each(make_course, tmp_path, capsys):
    root = make_course()
    batch = tmp_path / "lms_download"
    write_notebook(batch / "team_correct" / "notebook.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    write_notebook(batch / "team_empty.ipynb", [nbformat.v4.new_code_cell("import torch")])
    (batch / "team_broken.ipynb").write_text("{ not json")
    db = tmp_path / "grades" / "gradebook.db"

    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db)]) == 0
    table = capsys.readouterr().out
    assert "team_correct" in table and "1/1" in table
    assert "team_broken: not graded: team_broken.ipynb is not valid JSON (Expecting property name" in table

    out = tmp_path / "grades.csv"
    assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(db), "--output", str(out)]) == 0
    rows = {row["submission"]: row for row in csv.DictReader(out.open())}
    assert sorted(rows) == ["team_broken", "team_correct", "team_empty"]
    assert float(rows["team_correct"]["total"]) == 1 and float(rows["team_empty"]["total"]) == 0
    assert rows["team_broken"]["status"] == "error"

    pages = tmp_path / "feedback"
    assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(db), "--format", "html",
                 "--output", str(pages)]) == 0
    assert sorted(p.name for p in pages.iterdir()) == ["team_broken.html", "team_correct.html", "team_empty.html"]
    assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(db), "--format", "html"]) == 2
    assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(tmp_path / "none.db")]) == 2
    assert not (tmp_path / "none.db").exists()
    capsys.readouterr()

    # A rerun grades nothing again and says so.
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db)]) == 0
    assert "3 unchanged submissions were not regraded" in capsys.readouterr().out


def test_ids_and_messages_from_hand_ins_are_printed_as_they_are(assignment, capsys):
    """Rich markup, emoji codes or terminal control sequences in a folder name must not change the
    score table or the terminal."""
    ids = ["[bold red]team[/bold red]", "team :smile:", "team\x1b[2Jclear", "team\\xff"]
    now = dt.datetime(2027, 5, 1, tzinfo=dt.timezone.utc)
    results = {sid: SubmissionResult(assignment.id, sid, f"{sid}.ipynb", "nb", "suite", "0.1.0", "cpu", "error",
                                     f"[red]{sid}[/red] is not a notebook\x07", [], now) for sid in ids}
    _print_scores(assignment, results, set(), [("lms/[i]notes[/i].txt\x1b[31m", "not a notebook (.ipynb) or a folder")])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    for text in ("[bold red]team[/bold red]", "team :smile:", "team\\x1b[2Jclear", "team\\xff",
                 "[red]team :smile:[/red] is not a notebook\\x07", "entries not graded (1):",
                 "lms/[i]notes[/i].txt\\x1b[31m: not a notebook (.ipynb) or a folder"):
        assert text in out, text


def test_a_foreign_gradebook_is_refused_and_left_untouched(make_course, tmp_path, capsys):
    root = make_course()
    db = tmp_path / "gradebook.db"
    db.write_bytes(b"submission,total\nteam,3\n")
    submission = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(submission), "--gradebook", str(db)]) == 2
    assert "gradebook.db" in capsys.readouterr().err
    assert db.read_bytes() == b"submission,total\nteam,3\n"


def test_release_runs_verify_and_verify_passes_for_a_sound_assignment(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0]["points"] = 1  # what the demo suite awards
    root = make_course(config=course_config)
    assert main(["--course-root", str(root), "release", "--jobs", "1"]) == 0
    assert (f"release/{ASSIGNMENT}/: 3 files written (verified: the solution scores full marks, the release zero)"
            in capsys.readouterr().out)
    assert main(["--course-root", str(root), "verify"]) == 0
    assert f"{ASSIGNMENT}: verified" in capsys.readouterr().out


def test_verify_samples_prints_one_line_per_sample_whose_score_differs(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0]["points"] = 1
    root = make_course(config=course_config)
    samples = root / "samples" / ASSIGNMENT
    write_notebook(samples / "correct.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    write_notebook(samples / "off_by_one.ipynb", [nbformat.v4.new_code_cell(CORRECT.replace("k, dim", "k + 1, dim"))])
    write_notebook(samples / "undeclared.ipynb", [nbformat.v4.new_code_cell("import torch")])
    expected = {"correct": {"points": 1, "why": "the solution"},
                "off_by_one": {"points": 1, "why": "claims full marks, but keeps k + 1 logits"},
                "renamed": {"points": 0, "why": "a sample that is gone"}}
    (samples / "expected.json").write_text(json.dumps(expected))
    assert main(["--course-root", str(root), "release"]) == 0
    capsys.readouterr()
    assert main(["--course-root", str(root), "verify"]) == 0  # without --samples the samples are not graded
    assert main(["--course-root", str(root), "verify", "--samples"]) == 1
    out, err = capsys.readouterr()
    assert f"{ASSIGNMENT}: FAILED" in out and "expected.json is not graded" not in err
    assert sorted(err.splitlines()) == sorted([
        f"{ASSIGNMENT}: samples/{ASSIGNMENT}/expected.json names 'renamed', which is no sample",
        f"{ASSIGNMENT}: samples/{ASSIGNMENT}/undeclared has no expected score in expected.json",
        f"{ASSIGNMENT}: samples/{ASSIGNMENT}/off_by_one gets 0 points, expected.json says 1; not passed: "
        "test_top_k.py::test_top_k_on_random_logits (failed)"])

    expected["off_by_one"]["points"] = 0
    expected["undeclared"] = expected.pop("renamed")
    (samples / "expected.json").write_text(json.dumps(expected))
    assert main(["--course-root", str(root), "verify", "--samples"]) == 0
    (samples / "expected.json").write_text("{\"correct\": 1}")
    assert main(["--course-root", str(root), "verify", "--samples"]) == 1
    assert "expected.json: 'correct' needs a number `points`" in capsys.readouterr().err


def test_release_refuses_an_assignment_whose_solution_fails(make_course, capsys):
    cells = demo_cells()
    cells[2].source = cells[2].source.replace(SOLUTION_LINE, "kth = torch.topk(logits, k + 1, dim=-1).values[..., -1:]")
    root = make_course(cells)
    assert main(["--course-root", str(root), "release"]) == 2
    err = capsys.readouterr().err
    assert "not released" in err and "the solution does not pass test_top_k.py::test_top_k_on_random_logits" in err
    assert not (root / "release" / ASSIGNMENT).exists()


def test_verify_catches_points_that_disagree_with_the_config(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0]["points"] = 5
    root = make_course(config=course_config)
    assert main(["--course-root", str(root), "release", "--no-verify"]) == 0
    assert main(["--course-root", str(root), "verify"]) == 1
    assert "the suite awards 1 points but course_config.py gives 01_demo 5" in capsys.readouterr().err


def test_an_interrupted_batch_keeps_what_was_graded_and_the_rerun_grades_the_rest(make_course, tmp_path):
    """Ctrl-C reaches the whole process group, as in a terminal; graded submissions stay recorded."""
    root, db, command, process = _start_slow_batch(make_course(), tmp_path, jobs=1, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "run the same command again to grade the rest" in output
    first = _recorded(db)
    assert 1 <= first < 4
    with Gradebook.open(db) as gradebook:
        assert all(len(s.results) == 1 and s.earned == 1 for s in gradebook.submissions(ASSIGNMENT))

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{first} unchanged submissions were not regraded" in rerun.stdout
    assert _recorded(db) == 4


def test_a_batch_killed_with_sigkill_leaves_nothing_running_and_resumes(make_course, tmp_path):
    root, db, command, process = _start_slow_batch(make_course(), tmp_path, jobs=2, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
    os.kill(process.pid, signal.SIGKILL)  # the grade command alone, as the OOM killer or `kill -9` would
    process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _left_behind(process.pid, root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _left_behind(process.pid, root) == []
    with Gradebook.open(db) as gradebook:
        before = {s.submission_id: s.graded_at for s in gradebook.submissions(ASSIGNMENT)}
    assert 1 <= len(before) < 4
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} unchanged submissions were not regraded" in rerun.stdout
    with Gradebook.open(db) as gradebook:
        after = {s.submission_id: s.graded_at for s in gradebook.submissions(ASSIGNMENT)}
    assert len(after) == 4 and all(after[sid] == graded_at for sid, graded_at in before.items())


def _left_behind(session: int, course_root) -> list[int]:
    """Processes of a killed grade command: its session (workers, forkservers) or its sandboxes, which
    lead sessions of their own but run the course's sandbox forkserver."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            sid = os.getsid(int(entry))
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if sid == session or str(course_root) in cmdline:
            found.append(int(entry))
    return found


def _start_slow_batch(root, tmp_path, jobs: int, **popen):
    """`grade` of four slow hand-ins in a session of its own, returned once the first is recorded."""
    batch = tmp_path / "batch"
    slow = CORRECT + "import time\nPAUSE = time.sleep(2)\n"
    for i in range(4):
        write_notebook(batch / f"team{i}.ipynb", [nbformat.v4.new_code_cell(slow)])
    db = tmp_path / "gradebook.db"
    command = [sys.executable, "-m", "autograder.cli", "--course-root", str(root), "grade", ASSIGNMENT, str(batch),
               "--gradebook", str(db), "--jobs", str(jobs)]
    # Ctrl-C as in a terminal: a shell that started this test run in the background (CI) leaves SIGINT
    # ignored, and a process that starts with it ignored keeps ignoring it (as `nohup` relies on).
    process = subprocess.Popen(command, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _recorded(db) < 1:
        time.sleep(0.2)
    return root, db, command, process


def _recorded(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM submissions").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_the_cluster_path_grades_through_submitit(make_course, tmp_path, capsys):
    """`--executor slurm` and this test share every line but the submitit executor's kind."""
    root = make_course()
    submission = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    db = tmp_path / "gradebook.db"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(submission), "--gradebook", str(db),
                 "--executor", "submitit-local", "--cluster-folder", str(tmp_path / "jobs")]) == 0
    assert "1/1" in capsys.readouterr().out
    with Gradebook.open(db) as gradebook:
        assert [(s.submission_id, s.earned) for s in gradebook.submissions(ASSIGNMENT)] == [("team", 1.0)]
    assert any((tmp_path / "jobs").iterdir())


ATTACK_SUITE = '''import os
import signal

import pytest

pytestmark = pytest.mark.question("functions")


@pytest.mark.points(1)
def test_safe(submission):
    assert submission.safe() == 1


@pytest.mark.points(1)
def test_attack(submission):
    assert submission.attack() == 2
'''

SIGNALS = {"killpg": "os.killpg(0, signal.SIGKILL)", "kill0": "os.kill(0, signal.SIGKILL)",
           "kill_all": "os.kill(-1, signal.SIGKILL)", "kill_parent": "os.kill(os.getppid(), signal.SIGKILL)"}


def test_a_batch_with_submissions_that_signal_everything_completes(make_course, tmp_path, capsys):
    root = make_course(grader_tests={"test_functions.py": ATTACK_SUITE})
    batch = tmp_path / "batch"
    write_notebook(batch / "team_good.ipynb", [nbformat.v4.new_code_cell(
        "def safe():\n    return 1\n\ndef attack():\n    return 2\n")])
    for name, attack in SIGNALS.items():
        write_notebook(batch / f"team_{name}.ipynb", [nbformat.v4.new_code_cell(
            f"import os, signal\n\ndef safe():\n    return 1\n\ndef attack():\n    {attack}\n")])
    db = tmp_path / "gradebook.db"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db),
                 "--jobs", "2"]) == 0
    with Gradebook.open(db) as gradebook:
        scores = {s.submission_id: {r.test_id.split("::")[-1]: r.status for r in s.results}
                  for s in gradebook.submissions(ASSIGNMENT)}
    assert scores.pop("team_good") == {"test_safe": "passed", "test_attack": "passed"}
    assert scores == {f"team_{name}": {"test_safe": "passed", "test_attack": "failed"} for name in SIGNALS}


CRASH_SUITE = '''import os
import signal

import pytest

pytestmark = pytest.mark.question("crash")


@pytest.mark.points(1)
def test_output_that_crashes_a_library(submission):
    if submission.output() == "crash":
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault in a library the grader calls would
    assert True
'''


def test_a_submission_that_takes_its_worker_down_is_recorded_after_one_retry(make_course, tmp_path, capsys):
    root = make_course(grader_tests={"test_crash.py": CRASH_SUITE})
    batch = tmp_path / "batch"
    for team, output in (("team_a", "ok"), ("team_crash", "crash"), ("team_b", "ok")):
        write_notebook(batch / f"{team}.ipynb", [nbformat.v4.new_code_cell(f"def output():\n    return {output!r}\n")])
    db = tmp_path / "gradebook.db"
    command = ["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db), "--jobs", "2"]
    assert main(command) == 0
    assert "team_crash: not graded: the grader process died while running `output`" in capsys.readouterr().out
    with Gradebook.open(db) as gradebook:
        recorded = {s.submission_id: (s.status, s.earned) for s in gradebook.submissions(ASSIGNMENT)}
    assert recorded == {"team_a": ("graded", 1.0), "team_b": ("graded", 1.0), "team_crash": ("error", 0.0)}
    assert main(command) == 0  # converged: the rerun grades nothing again
    assert "3 unchanged submissions were not regraded" in capsys.readouterr().out


def test_a_submission_neither_reads_nor_writes_the_tas_terminal(make_course, tmp_path):
    """Prints, warnings and escape sequences (here: clear the screen) at load and in a graded call stay
    in the sandbox; the TA sees the progress lines and the score table. What the TA types (here: the
    grade command's stdin) cannot be read: a submission that finds any of it fails its check."""
    root = make_course()
    noisy = ("import os, sys, warnings\nprint('LOUD-AT-LOAD\\x1b[2J')\n" + CORRECT.replace(
        "def top_k_filter(logits, k):\n",
        "def top_k_filter(logits, k):\n    print('LOUD-IN-CALL' * 1000)\n    sys.stderr.write('LOUD-STDERR')\n"
        "    warnings.warn('LOUD-WARNING')\n"
        "    if os.read(0, 100):\n        raise RuntimeError('read the TA typing')\n"))
    write_notebook(tmp_path / "batch" / "team.ipynb", [nbformat.v4.new_code_cell(noisy)])
    write_notebook(tmp_path / "batch" / "quiet.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "--course-root", str(root), "grade", ASSIGNMENT,
                           str(tmp_path / "batch"), "--gradebook", str(tmp_path / "g.db")],
                          input="my password\n" * 100, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "team" in done.stdout and "LOUD" not in done.stdout + done.stderr and "\x1b[2J" not in done.stdout
    with Gradebook.open(tmp_path / "g.db") as gradebook:
        assert gradebook.get(ASSIGNMENT, "team").earned == 1


def test_on_a_gpu_runner_a_sample_without_gpu_points_is_compared_on_the_cpu_tests_only():
    """expected.json states what a CPU grader gives; `gpu_points`, where given, adds what the GPU-marked tests
    give. A sample that declares none is not held to a number nobody wrote down."""
    from autograder.authoring.release import gpu_marked_tests
    from autograder.authoring.verify import _problems_of_sample
    from autograder.course.config import load_course
    from autograder.course.gradebook import TestResult

    assignment = load_course(ROOT).get("04_efficient_inference_part_2")
    gpu_tests = gpu_marked_tests(assignment.tests_dir)
    assert len(gpu_tests) == 3 and all(t.startswith("test_") and "::" in t for t in gpu_tests), gpu_tests
    gpu_test = sorted(gpu_tests)[0]

    def result(gpu_earned: float) -> SubmissionResult:
        tests = [TestResult("test_a.py::test_cpu", "q", "passed", 2, 2, "", 0.1),
                 TestResult(gpu_test, "q", "passed" if gpu_earned else "failed", gpu_earned, 1, "", 0.1)]
        return SubmissionResult("04_efficient_inference_part_2", "s", "s.ipynb", "h", "h", "v", "cuda", "graded", "",
                                tests, dt.datetime.now(dt.timezone.utc))

    assert _problems_of_sample(result(1), assignment, (2, None), gpu_tests) == []  # GPU points left out
    assert _problems_of_sample(result(1), assignment, (2, 1), gpu_tests) == []
    assert _problems_of_sample(result(0), assignment, (2, 1), gpu_tests) == [
        f"samples/04_efficient_inference_part_2/s gets 2 points, expected.json says 3; not passed: {gpu_test} (failed)"]
    assert _problems_of_sample(result(1), assignment, (2, None), None) == [  # a CPU grader counts everything
        "samples/04_efficient_inference_part_2/s gets 3 points, expected.json says 2"]
