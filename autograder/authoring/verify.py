"""Before a release is accepted: the solution scores full marks, the unsolved release scores zero.

Both notebooks are graded exactly like student submissions (same extraction, sandbox and suite).
The release must fail every test cleanly - a failed check, not a grader error or a timeout - so a
student who has not started yet sees "not implemented" messages, not a broken grader.
"""

from __future__ import annotations

from pathlib import Path

from autograder.course.config import Assignment
from autograder.course.gradebook import SubmissionResult
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


def verify(assignment: Assignment, release_dir: Path | None = None, jobs: int | None = None) -> list[str]:
    """Problems that block a release (empty when the assignment is sound)."""
    release_dir = release_dir or assignment.release_dir
    solution = _notebook(assignment.source_dir, assignment)
    unsolved = _notebook(release_dir, assignment)
    root, suite = str(assignment.root), suite_hash(assignment)
    todo = [Job(root, assignment.id, "solution", str(solution), suite),
            Job(root, assignment.id, "release", str(unsolved), suite)]
    problems = []
    for job, outcome in run_jobs(todo, jobs):
        if isinstance(outcome, BaseException):
            problems.append(f"grading the {job.submission_id} failed: {type(outcome).__name__}: {outcome}")
        elif job.submission_id == "solution":
            problems += _problems_of_solution(outcome, assignment)
        else:
            problems += _problems_of_release(outcome)
    return [f"{assignment.id}: {p}" for p in problems]
