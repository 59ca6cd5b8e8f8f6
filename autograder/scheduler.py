"""Stage 7: grade a batch of submissions in parallel and record each one as soon as it is done.

The CLI process never imports torch. Grading workers fork from a warm forkserver that has imported
torch, transformers and pytest once; each worker runs the hidden suite per submission and starts
its sandboxes from a forkserver of its own (a sandbox must never be forked from a process that has
held reference values in memory). Each finished submission is committed to the gradebook at once,
so an interrupted batch loses nothing and a rerun skips what is already graded.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from autograder import __version__
from autograder.config import Assignment, load_course
from autograder.devices import nvidia_driver_present
from autograder.extraction import SubmissionFormatError, extract, find_notebook, submission_hash
from autograder.gradebook import Gradebook, SubmissionResult

WORKER_PRELOAD = ["torch", "transformers", "pytest", "autograder.oracle"]


@dataclass(frozen=True)
class Job:
    """One submission to grade; plain data so it can travel to a worker process."""

    course_root: str
    assignment_id: str
    submission_id: str
    path: str
    masked_paths: tuple[str, ...]
    isolate: bool = True


def discover(paths: list[Path], assignment: Assignment) -> dict[str, Path]:
    """Submission id -> path. A folder with one notebook is one submission (an LMS folder per
    team); a folder with several is a batch whose notebooks and subfolders are the submissions."""
    found: dict[str, Path] = {}

    def add(sid: str, path: Path) -> None:
        if sid in found:
            raise SubmissionFormatError(f"two submissions are named {sid!r}: {found[sid]} and {path}")
        found[sid] = path

    for path in map(Path, paths):
        if not path.exists():
            raise SubmissionFormatError(f"{path} does not exist")
        if path.is_file():
            add(path.stem, path)
            continue
        notebooks = [p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
        direct_dirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(notebooks) == 1 and not direct_dirs:
            add(path.name, path)
            continue
        for child in sorted(path.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir() or child.suffix == ".ipynb":
                add(child.stem if child.is_file() else child.name, child)
    return found


def secret_paths(assignment: Assignment, extra=()) -> tuple[str, ...]:
    """What a sandbox must never see: hidden suites, solutions, samples, gradebooks, submissions."""
    root = assignment.root
    paths = [root / "grader_tests", root / "source", root / "samples", *map(Path, extra)]
    return tuple(str(p.resolve()) for p in paths)


def grade_one(job: Job) -> SubmissionResult:
    """Runs in a worker: read, extract and grade one submission; never raises for the student's sake."""
    from autograder.devices import device_name
    from autograder.oracle import run_suite, suite_hash

    assignment = load_course(Path(job.course_root)).get(job.assignment_id)
    common = dict(assignment=assignment.id, submission_id=job.submission_id, path=job.path,
                  suite_hash=suite_hash(assignment), grader_version=__version__, device=device_name(),
                  graded_at=dt.datetime.now(dt.timezone.utc))
    digest = submission_digest(Path(job.path), assignment)
    try:
        code = extract(find_notebook(Path(job.path), f"{assignment.id}.ipynb"), assignment.extraction)
    except (SubmissionFormatError, OSError) as exc:
        return SubmissionResult(**common, submission_hash=digest, status="error", message=str(exc), results=[])
    session = run_suite(assignment, code, job.masked_paths, job.isolate)
    notes = list(code.warnings) + list(session.load_warnings)
    if "isolation" in session.isolation:
        notes.append(f"sandbox isolation {session.isolation['isolation']}")
    return SubmissionResult(**common, submission_hash=digest, status="graded", message="",
                            results=session.results, load_messages="\n".join(notes))


def submission_digest(path: Path, assignment: Assignment) -> str:
    try:
        return submission_hash(find_notebook(path, f"{assignment.id}.ipynb"))
    except (SubmissionFormatError, OSError):
        return ""


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_jobs(todo: list[Job], jobs: int | None = None):
    """Yield (job, SubmissionResult or the exception that stopped the grader) as each finishes."""
    if not todo:
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    with ProcessPoolExecutor(max_workers=min(jobs or default_jobs(), len(todo)), mp_context=ctx) as pool:
        pending = {pool.submit(grade_one, job): job for job in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    error = future.exception()
                    yield job, (error if error is not None else future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def grade_batch(assignment: Assignment, submissions: dict[str, Path], gradebook: Gradebook, *,
                jobs: int | None = None, force: bool = False, isolate: bool = True, on_done=None):
    """Grade what is not already current in `gradebook`.

    Returns (graded ids, skipped ids, {id: grader failure}). `on_done(job, result_or_error)` is
    called in this process as each submission finishes (progress bars). A submission whose grading
    failed for the grader's own reasons is not recorded, so the next run retries it.
    """
    from autograder.oracle import suite_hash

    suite = suite_hash(assignment)
    gpu_runner = nvidia_driver_present()
    db = Path(gradebook.path)
    masked = secret_paths(assignment, [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                                       *submissions.values()])
    todo, skipped = [], []
    for sid, path in submissions.items():
        digest = submission_digest(path, assignment)
        if not force and digest and gradebook.is_current(assignment.id, sid, digest, suite, __version__,
                                                         gpu_runner=gpu_runner):
            skipped.append(sid)
        else:
            todo.append(Job(str(assignment.root), assignment.id, sid, str(path.resolve()), masked, isolate))
    graded, failures = [], {}
    for job, outcome in run_jobs(todo, jobs):
        if isinstance(outcome, BaseException):
            failures[job.submission_id] = f"{type(outcome).__name__}: {outcome}"
        else:
            gradebook.record(outcome)
            graded.append(job.submission_id)
        if on_done:
            on_done(job, outcome)
    return graded, skipped, failures
