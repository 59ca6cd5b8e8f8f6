"""Before a release is accepted: the solution scores full marks, the unsolved release scores zero, and
(`verify --samples`) every sample submission gets the points samples/<a>/expected.json states.

All notebooks are graded exactly like student submissions (same extraction, sandbox and suite).
The release must fail every test cleanly - a failed check, not a grader error or a timeout - so a
student who has not started yet sees "not implemented" messages, not a broken grader.
"""

from __future__ import annotations

import json
from pathlib import Path

from autograder.authoring.release import gpu_marked_tests
from autograder.course.config import Assignment
from autograder.course.gradebook import SubmissionResult
from autograder.grading.devices import nvidia_driver_present
from autograder.grading.handins import EXPECTED_SCORES, SubmissionFormatError, discover
from autograder.grading.scheduler import Job, run_jobs, suite_hash


def _notebook(folder: Path, assignment: Assignment) -> Path:
    preferred = folder / f"{assignment.id}.ipynb"
    return preferred if preferred.exists() else sorted(folder.glob("*.ipynb"))[0]


def _problems_of_solution(result: SubmissionResult, assignment: Assignment) -> list[str]:
    problems = []
    if result.status != "graded":
        return [f"the source notebook could not be graded: {result.message}"]
    if not result.results:
        problems.append(f"the suite in grader_tests/{assignment.id}/ ran no test")
    if result.possible != assignment.points:
        problems.append(f"the suite awards {result.possible:g} points but course_config.py gives "
                        f"{assignment.id} {assignment.points:g}")
    for r in result.results:
        if r.status not in ("passed", "needs-gpu"):
            problems.append(f"the solution does not pass {r.test_id} ({r.status}): {r.message}")
    return problems


def _problems_of_release(result: SubmissionResult) -> list[str]:
    if result.status != "graded":
        return [f"the release notebook could not be graded: {result.message}"]
    problems = []
    for r in result.results:
        if r.points_earned:
            problems.append(f"the unsolved release passes {r.test_id}")
        elif r.status not in ("failed", "needs-gpu"):
            problems.append(f"the unsolved release is not a clean failure in {r.test_id} ({r.status}): {r.message}")
    return problems


def _expected_scores(folder: Path) -> tuple[dict[str, tuple[float, float | None]], list[str]]:
    """Sample id -> (`points`, `gpu_points` or None), and what is wrong with expected.json itself."""
    shown = f"samples/{folder.name}/{EXPECTED_SCORES}"
    try:
        declared = json.loads((folder / EXPECTED_SCORES).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, [f"{shown} is missing: every sample needs the points it must get"]
    except (ValueError, OSError) as exc:
        return {}, [f"{shown} cannot be read: {exc}"]
    if not isinstance(declared, dict):
        return {}, [f"{shown} must map each sample's name to {{\"points\": ..., \"why\": ...}}"]
    expected, problems = {}, []
    for sid, want in declared.items():
        numbers = [want.get(key, 0) for key in ("points", "gpu_points")] if isinstance(want, dict) else []
        if not numbers or "points" not in want or not all(type(n) in (int, float) for n in numbers):
            problems.append(f"{shown}: {sid!r} needs a number `points` (and optionally `gpu_points` and `why`)")
        else:
            expected[sid] = (numbers[0], want.get("gpu_points"))
    return expected, problems


def _sample_jobs(assignment: Assignment, suite: str) -> tuple[list[Job], dict[str, tuple[float, float | None]], list[str]]:
    """The samples to grade, the points each must get, and what prevents comparing them."""
    folder = assignment.root / "samples" / assignment.id
    if not folder.is_dir():
        return [], {}, [f"samples/{assignment.id}/ does not exist"]
    expected, problems = _expected_scores(folder)
    try:
        found = discover([folder])
    except SubmissionFormatError as exc:
        return [], expected, problems + [str(exc)]
    problems += [f"{path} is not graded: {why}" for path, why in found.skipped]
    problems += [f"samples/{assignment.id}/{EXPECTED_SCORES} names {sid!r}, which is no sample"
                 for sid in sorted(expected.keys() - found.handins.keys())]
    problems += [f"{_shown_sample(assignment, sid)} has no expected score in {EXPECTED_SCORES}"
                 for sid in sorted(found.handins.keys() - expected.keys())]
    jobs = [Job(str(assignment.root), assignment.id, sid, str(path), suite)
            for sid, path in found.handins.items() if sid in expected]
    return jobs, expected, problems


def _shown_sample(assignment: Assignment, sid: str) -> str:
    return f"samples/{assignment.id}/{sid}"


def _problems_of_sample(result: SubmissionResult, assignment: Assignment, want: tuple[float, float | None],
                        gpu_tests: set[str] | None) -> list[str]:
    """`want` is (points, gpu_points); `gpu_tests`, on a GPU runner, the GPU-marked tests. There a sample's
    score is `points + gpu_points`, or, where expected.json gives no `gpu_points`, `points` from the tests a
    CPU grader runs too."""
    shown = _shown_sample(assignment, result.submission_id)
    if result.status != "graded":
        return [f"{shown} could not be graded: {result.message}"]
    points, gpu_points = want
    counted = result.results
    if gpu_tests is not None and gpu_points is None:
        counted = [r for r in result.results if r.test_id not in gpu_tests]
    wanted = points + (gpu_points or 0) if gpu_tests is not None else points
    earned = sum(r.points_earned for r in counted)
    if earned == wanted:
        return []
    missed = [f"{r.test_id} ({r.status})" for r in counted if r.points_earned < r.points_possible]
    return [f"{shown} gets {earned:g} points, {EXPECTED_SCORES} says {wanted:g}"
            + (f"; not passed: {', '.join(missed)}" if missed else "")]


def verify(assignment: Assignment, release_dir: Path | None = None, jobs: int | None = None,
           samples: bool = False) -> list[str]:
    """Problems that block a release (empty when the assignment is sound); with `samples`, also one per
    sample whose score differs from expected.json."""
    release_dir = release_dir or assignment.release_dir
    solution = _notebook(assignment.source_dir, assignment)
    unsolved = _notebook(release_dir, assignment)
    root, suite = str(assignment.root), suite_hash(assignment)
    todo = [Job(root, assignment.id, "solution", str(solution), suite),
            Job(root, assignment.id, "release", str(unsolved), suite)]
    sample_jobs, expected, problems = _sample_jobs(assignment, suite) if samples else ([], {}, [])
    gpu_tests = gpu_marked_tests(assignment.tests_dir) if sample_jobs and nvidia_driver_present() else None
    for job, outcome in run_jobs(todo + sample_jobs, jobs):
        if isinstance(outcome, BaseException):
            problems.append(f"grading the {job.submission_id} failed: {type(outcome).__name__}: {outcome}")
        elif job in sample_jobs:
            problems += _problems_of_sample(outcome, assignment, expected[job.submission_id], gpu_tests)
        elif job.submission_id == "solution":
            problems += _problems_of_solution(outcome, assignment)
        else:
            problems += _problems_of_release(outcome)
    return [f"{assignment.id}: {p}" for p in problems]
