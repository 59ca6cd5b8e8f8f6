"""The pytest plugin: how each hidden test's outcome becomes a status, points and a message."""

from __future__ import annotations

import multiprocessing
import re
import textwrap

import nbformat
import pytest

from autograder.course.config import load_course
from autograder.grading.extraction import extract
from autograder.grading import oracle, sandbox
from autograder.grading.oracle import run_suite
from autograder.grading.scheduler import suite_hash
from conftest import ASSIGNMENT, write_course, write_notebook

SUITE = textwrap.dedent('''
    import pytest
    import torch
    from autograder.grading.testing import assert_close

    pytestmark = pytest.mark.question("scaling")

    @pytest.mark.points(2)
    def test_doubles(submission):
        x = torch.arange(4.0)
        assert_close(submission.double(x), x * 2, what="double(x)")

    @pytest.mark.points(1)
    def test_plain_assert_uses_the_docstring(submission):
        """double(1) is 2"""
        assert submission.double(torch.ones(1)).item() == 2

    @pytest.mark.points(1)
    @pytest.mark.question("errors")
    def test_rejects_negative(submission):
        with submission.raises(ValueError):
            submission.double(torch.tensor(-1.0))

    @pytest.mark.points(1)
    @pytest.mark.question("errors")
    def test_missing(submission):
        submission.halve(torch.ones(1))

    @pytest.mark.points(1)
    def test_broken_test_is_a_grader_error(submission):
        undefined_reference_helper()

    @pytest.mark.points(3)
    @pytest.mark.gpu
    def test_on_cuda(submission):
        assert_close(submission.double(torch.ones(2, device="cuda")), torch.full((2,), 2.0, device="cuda"))

    @pytest.mark.points(1)
    def test_slow(submission):
        submission.spin()

    @pytest.mark.points(1)
    def test_mixes_torchs_numerics_apis(submission):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
        assert_close(submission.compare_precisions(x), x @ x.T, what="compare_precisions(x)")

    @pytest.mark.points(1)
    def test_returns_a_pair(submission):
        low, high = submission.bounds(torch.arange(4.0))
        assert low == 0 and high == 3
''')

CORRECT = '''
import torch
def double(x):
    if (x < 0).any():
        raise ValueError("negative input")
    return x * 2
def spin():
    torch.backends.cuda.matmul.allow_tf32 = True  # harmless here, but a global the grader pins
    return None
def bounds(x):
    return x.min(), x.max()
def compare_precisions(x):
    torch.set_float32_matmul_precision("high")  # the new API's tree, then the legacy switches: a mix
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    return x @ x.T
'''
WRONG = '''
import torch
def double(x):
    while bool(x.sum() < -100):
        pass
    return x * 3
def spin():
    while True:
        pass
def bounds(x):
    return torch.stack([x.min(), x.max(), x.mean()])
'''


@pytest.fixture(scope="module")
def assignment(tmp_path_factory):
    root = write_course(tmp_path_factory.mktemp("course"), CORRECT, {"test_scaling.py": SUITE}, points=12,
                        call_timeout_s=2, memory_mb=2048)
    return load_course(root).get(ASSIGNMENT)


def results_of(assignment, code: str, tmp_path, isolate: bool = True) -> list:
    notebook = write_notebook(tmp_path / "submission.ipynb", [nbformat.v4.new_code_cell(code)])
    return run_suite(assignment, extract(notebook), isolate).results


def by_test(results: list) -> dict:
    return {r.test_id.split("::")[1]: r for r in results}


def grade(assignment, code: str, tmp_path):
    return by_test(results_of(assignment, code, tmp_path))


@pytest.fixture(scope="module")
def correct_list(assignment, tmp_path_factory):
    return results_of(assignment, CORRECT, tmp_path_factory.mktemp("correct"))


@pytest.fixture(scope="module")
def correct_results(correct_list):
    return by_test(correct_list)


@pytest.fixture(scope="module")
def wrong_results(assignment, tmp_path_factory):
    return grade(assignment, WRONG, tmp_path_factory.mktemp("wrong"))


def test_every_test_gets_exactly_one_result(correct_list):
    """Each test of the suite, a skipped one and a broken one too, is recorded once, in suite order."""
    assert [r.test_id.split("::")[1] for r in correct_list] == re.findall(r"def (test_\w+)\(submission", SUITE)


def test_passing_tests_earn_their_points(correct_results):
    for name in ("test_doubles", "test_plain_assert_uses_the_docstring", "test_rejects_negative", "test_slow"):
        assert correct_results[name].status == "passed"
        assert correct_results[name].points_earned == correct_results[name].points_possible > 0


def test_questions_come_from_markers(correct_results):
    assert correct_results["test_doubles"].question == "scaling"
    assert correct_results["test_rejects_negative"].question == "errors"


def test_gpu_tests_need_a_gpu_runner_and_are_not_zero_points_of_a_failure(correct_results):
    r = correct_results["test_on_cuda"]
    assert (r.status, r.points_earned, r.points_possible) == ("needs-gpu", 0.0, 3.0)
    assert "GPU runner" in r.message


def test_a_broken_test_is_a_grader_error_not_the_students_fault(correct_results):
    r = correct_results["test_broken_test_is_a_grader_error"]
    assert r.status == "error" and "NameError" in r.message and r.points_earned == 0


def test_missing_function_is_a_failure_with_a_plain_message(correct_results):
    r = correct_results["test_missing"]
    assert r.status == "failed" and r.message == "`halve` is not defined in your notebook"


def test_wrong_values_fail_with_the_tolerance_message(wrong_results):
    r = wrong_results["test_doubles"]
    assert r.status == "failed" and r.points_earned == 0
    assert "double(x)" in r.message and "max abs error" in r.message and "tolerance" in r.message


def test_plain_assert_message_never_shows_hidden_test_source(wrong_results):
    r = wrong_results["test_plain_assert_uses_the_docstring"]
    assert r.status == "failed"
    assert r.message == "check failed: double(1) is 2"


def test_expected_exception_not_raised(wrong_results):
    r = wrong_results["test_rejects_negative"]
    assert r.status == "failed" and "expected your code to raise ValueError" in r.message


def test_timeout_scores_zero_and_is_reported_as_timeout(wrong_results):
    r = wrong_results["test_slow"]
    assert r.status == "timeout" and r.points_earned == 0 and "did not finish within 2 s" in r.message


def test_a_correct_function_that_changes_numerics_passes_with_a_note(correct_results):
    result = correct_results["test_slow"]
    assert result.status == "passed" and result.points_earned == 1
    assert result.message.startswith("`spin` changed torch.backends.cuda.matmul.allow_tf32; the grader reset it")
    assert correct_results["test_doubles"].message == ""


def test_a_correct_function_that_mixes_torchs_two_numerics_apis_keeps_its_points(correct_results):
    """Mixed, the legacy getters raise (`torch.get_float32_matmul_precision()` among them): the grader
    reads and resets every setting all the same."""
    result = correct_results["test_mixes_torchs_numerics_apis"]
    assert (result.status, result.points_earned) == ("passed", 1)
    assert "`compare_precisions` changed torch.get_float32_matmul_precision(); the grader reset it" in result.message


def test_a_fault_of_the_graders_code_in_the_sandbox_is_a_grader_error_not_the_students(assignment, tmp_path,
                                                                                        monkeypatch):
    """A fault planted in the sandbox's grader-side code (its numerics pins), in sandboxes forked from
    this process: every call fails twice (retried once), and each is a grader error that blames no one."""
    def faulty(torch):
        raise RuntimeError("planted fault in the grader's pins")

    monkeypatch.setattr(sandbox, "_pin_numerics", faulty)
    monkeypatch.setattr(oracle, "warm_context", lambda *args: multiprocessing.get_context("fork"))
    results = by_test(results_of(assignment, CORRECT, tmp_path, isolate=False))
    r = results["test_doubles"]
    assert (r.status, r.points_earned) == ("error", 0)
    assert r.message == ("grader error in this test: `double`: the grader failed inside the sandbox (RuntimeError: "
                         "planted fault in the grader's pins); please tell the course staff")
    assert results["test_rejects_negative"].status == "error"  # not "expected ValueError, but ..."


def test_a_result_of_the_wrong_shape_is_the_students_failure_not_a_grader_error(correct_results, wrong_results):
    assert correct_results["test_returns_a_pair"].status == "passed"
    r = wrong_results["test_returns_a_pair"]
    assert r.status == "failed" and r.message.startswith(
        "your function's result could not be unpacked into the values the task names (too many values to unpack")


def test_suite_hash_changes_with_the_tests(assignment):
    before = suite_hash(assignment)
    extra = assignment.tests_dir / "test_extra.py"
    extra.write_text("X = 1\n")
    try:
        assert suite_hash(assignment) != before
    finally:
        extra.unlink()
    assert suite_hash(assignment) == before


def test_only_gpu_runs_just_the_gpu_marked_tests(assignment, tmp_path):
    notebook = write_notebook(tmp_path / "submission.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    session = run_suite(assignment, extract(notebook), only_gpu=True)
    assert [(r.test_id.split("::")[1], r.status) for r in session.results] == [("test_on_cuda", "needs-gpu")]


def test_pending_gpu_completes_only_the_waiting_grades_and_keeps_the_cpu_results(assignment, tmp_path, monkeypatch):
    import dataclasses

    from autograder.cli import main
    from autograder.course.gradebook import Gradebook
    from autograder.grading.handins import submission_digest
    from autograder.grading.scheduler import complete_gpu_tests, grade_batch, with_gpu_results

    for name in ("waiting", "changed"):
        write_notebook(tmp_path / "batch" / f"{name}.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    batch = {p.stem: p for p in (tmp_path / "batch").iterdir()}
    with Gradebook.open(tmp_path / "gradebook.db") as gradebook:
        grade_batch(assignment, batch, gradebook, jobs=1)
        cpu = {s.submission_id: s for s in gradebook.submissions(assignment.id)}
        assert all(s.incomplete for s in cpu.values())
        write_notebook(batch["changed"], [nbformat.v4.new_code_cell(CORRECT + "\n# edited\n")])
        assert submission_digest(batch["changed"]) != cpu["changed"].submission_hash
        done = []
        completed, left_out, failures = complete_gpu_tests(assignment, batch, gradebook, jobs=1,
                                                           on_done=lambda job, outcome: done.append(outcome))
        assert (completed, left_out, failures) == (["waiting"], ["changed"], {})
        assert [o.stages["gradebook write"] > 0 for o in done] == [True]  # its profile has the write too
        after = gradebook.get(assignment.id, "waiting")
        # This machine has no GPU, so the GPU test is still pending; every CPU result is kept as it was.
        assert [(r.test_id, r.status, r.points_earned) for r in after.results] == [
            (r.test_id, r.status, r.points_earned) for r in cpu["waiting"].results]
        assert after.device.endswith("; GPU tests on cpu")
        assert gradebook.get(assignment.id, "changed").graded_at == cpu["changed"].graded_at

    # Merging a GPU runner's verdict: only the test that waited changes.
    waiting = cpu["waiting"]
    gpu_test = next(r for r in waiting.results if r.status == "needs-gpu")
    ran = dataclasses.replace(gpu_test, status="passed", points_earned=gpu_test.points_possible)
    gpu = dataclasses.replace(waiting, results=[ran], device="NVIDIA H100")
    merged = with_gpu_results(waiting, gpu)
    assert not merged.incomplete and merged.earned == waiting.earned + gpu_test.points_possible
    assert [r for r in merged.results if r.test_id != gpu_test.test_id] == [
        r for r in waiting.results if r.test_id != gpu_test.test_id]

    monkeypatch.chdir(tmp_path)
    assert main(["--course-root", str(assignment.root), "grade", assignment.id, str(tmp_path / "batch"),
                 "--pending-gpu"]) == 2  # this machine has no NVIDIA driver


def test_a_conftest_above_the_suite_is_never_loaded(tmp_path):
    """Only the suite's own folder configures its run (a conftest.py in the course root or in /tmp is not the suite's)."""
    suite = ("import pytest\nimport torch\n\n@pytest.mark.points(1)\ndef test_doubles(submission):\n"
             "    assert submission.double(torch.ones(2)).tolist() == [2.0, 2.0]\n")
    root = write_course(tmp_path, CORRECT, {"test_one.py": suite}, points=1)
    (root / "grader_tests" / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture(autouse=True)\ndef planted():\n    raise RuntimeError('a conftest above the suite ran')\n")
    results = grade(load_course(root).get(ASSIGNMENT), CORRECT, tmp_path)
    assert results["test_doubles"].status == "passed", results["test_doubles"].message


def test_pytest_plugins_installed_on_the_grading_machine_are_not_loaded(tmp_path):
    """A grade must not depend on which pytest plugins the grading machine has installed."""
    import importlib.metadata

    installed = sorted({ep.name for ep in importlib.metadata.entry_points(group="pytest11")})
    if not installed:
        pytest.skip("no pytest plugin is installed here to leave out")
    suite = ("import pytest\n\n@pytest.mark.points(1)\ndef test_plugins(submission, request):\n"
             f"    loaded = [name for name in {installed!r} if request.config.pluginmanager.has_plugin(name)]\n"
             "    assert not loaded, f'loaded {loaded}'\n")
    root = write_course(tmp_path, CORRECT, {"test_one.py": suite}, points=1)
    results = grade(load_course(root).get(ASSIGNMENT), CORRECT, tmp_path)
    assert results["test_plugins"].status == "passed", results["test_plugins"].message


def test_suites_with_the_same_file_names_graded_in_one_process_each_run_their_own_tests(tmp_path):
    """pytest keeps a suite's modules under their bare names: verify of several assignments, or a suite
    edited between runs, must run the tests now on disk, not the ones imported first."""
    def suite(name: str) -> str:
        return f"import pytest\n\n@pytest.mark.points(1)\ndef test_{name}(submission):\n    pass\n"

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = write_course(tmp_path / "a", CORRECT, {"test_same.py": suite("first")}, points=1)
    second = write_course(tmp_path / "b", CORRECT, {"test_same.py": suite("second")}, points=1)
    assert list(grade(load_course(first).get(ASSIGNMENT), CORRECT, tmp_path / "a")) == ["test_first"]
    assert list(grade(load_course(second).get(ASSIGNMENT), CORRECT, tmp_path / "b")) == ["test_second"]
    (second / "grader_tests" / ASSIGNMENT / "test_same.py").write_text(suite("edited") + "\n")
    assert list(grade(load_course(second).get(ASSIGNMENT), CORRECT, tmp_path / "b")) == ["test_edited"]


def test_a_grading_run_never_formats_pytests_traceback_of_a_failure(assignment, tmp_path, monkeypatch):
    """pytest's report of a failed test shows the source of every frame (about 15 ms per failure) and
    nobody reads it: the verdict and its message come from the exception. The messages stay the same."""
    from _pytest._code.code import ExceptionInfoFormatter

    formatted = []
    original = ExceptionInfoFormatter.get_source
    monkeypatch.setattr(ExceptionInfoFormatter, "get_source",
                        lambda *args, **kwargs: formatted.append(1) or original(*args, **kwargs))
    results = grade(assignment, "import torch\ndef double(x):\n    return x * 3\n", tmp_path)
    assert results["test_doubles"].status == "failed" and "max abs error" in results["test_doubles"].message
    assert results["test_missing"].status == "failed" and results["test_broken_test_is_a_grader_error"].status == "error"
    assert formatted == []


def test_a_suite_run_by_hand_keeps_pytests_tracebacks(tmp_path):
    """Instructors debugging a suite with plain pytest see the failing test's source."""
    import subprocess
    import sys

    (tmp_path / "test_by_hand.py").write_text("def test_fails():\n    assert 1 + 1 == 3, 'arithmetic'\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "autograder.grading.oracle", str(tmp_path), "-c", "/dev/null"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert "assert 1 + 1 == 3, 'arithmetic'" in done.stdout, done.stdout


SLOW_LOAD_SUITE = "import pytest\n\n" + "\n\n".join(
    f"@pytest.mark.points(1)\ndef test_{n}(submission):\n    submission.quit()\n" for n in range(5))
SLOW_LOAD_THEN_EXIT = "import os\nimport time\n\nSLOW = time.sleep(1.5)\n\n\ndef quit():\n    os._exit(0)\n"


def test_reloading_a_notebook_after_a_crash_is_charged_to_its_time_budget(tmp_path):
    """A notebook that sleeps at top level and ends its process in every call made the grader reload it
    for each test, free: a load timeout (60 s) per test. The first load stays free, every reload is
    charged, and once the budget is spent no sandbox starts again."""
    root = write_course(tmp_path, SLOW_LOAD_THEN_EXIT, {"test_quit.py": SLOW_LOAD_SUITE}, points=5,
                        call_timeout_s=2, submission_timeout_s=2)
    notebook = write_notebook(tmp_path / "submission.ipynb", [nbformat.v4.new_code_cell(SLOW_LOAD_THEN_EXIT)])
    session = run_suite(load_course(root).get(ASSIGNMENT), extract(notebook))
    statuses = [r.status for r in session.results]
    assert session.generation == 3, statuses  # the free load, one charged reload, one cut short by the budget
    assert statuses[:2] == ["failed", "failed"] and statuses[2:] == ["timeout"] * 3
    assert "reloading your notebook" in session.results[2].message
    assert all("whole time budget" in r.message for r in session.results[2:])
