"""Stage 7: grade a batch of submissions in parallel and record each one as soon as it is done.

Locally (the default) a pool of workers on this machine; on a cluster, Slurm jobs through submitit.

The CLI process never imports torch. Grading workers and their sandboxes fork from one warm
forkserver (`autograder.warm`) that imported what the assignment needs once and never holds a
reference value or a submission; each worker runs the hidden suite per submission. Each finished
submission is committed to the gradebook at once, so an interrupted batch loses nothing and a rerun
skips what is already graded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from autograder import __version__
from autograder.config import Assignment, load_course
from autograder.devices import nvidia_driver_present
from autograder.handins import SubmissionFormatError, find_notebook, submission_digest, submission_hash
from autograder.gradebook import Gradebook, SubmissionResult
from autograder import warm


@dataclass(frozen=True)
class Job:
    """One submission to grade; plain data so it can travel to a worker process."""

    course_root: str
    assignment_id: str
    submission_id: str
    path: str
    suite_hash: str
    isolate: bool = True
    trace: str | None = None  # a file the worker keeps naming the call in progress


def suite_hash(assignment: Assignment) -> str:
    """Changes whenever a test file, the assignment's grading settings or the grader change."""
    digest = hashlib.sha256(f"{__version__}\n{assignment.tolerances}\n{assignment.limits}\n"
                            f"{assignment.extraction}\n".encode())
    for path in sorted(assignment.tests_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(assignment.tests_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def grade_one(job: Job) -> SubmissionResult:
    """Runs in a worker: read, extract and grade one submission; never raises for the student's sake."""
    from autograder.devices import device_name
    from autograder.extraction import extract  # nbformat: seconds to import, for the workers only
    from autograder.oracle import run_suite

    if job.trace:
        Path(job.trace).write_text("")  # this job has started: a suspect if the worker dies now
    assignment = load_course(Path(job.course_root)).get(job.assignment_id)
    common = dict(assignment=assignment.id, submission_id=job.submission_id, path=job.path,
                  suite_hash=job.suite_hash, grader_version=__version__, device=device_name(),
                  graded_at=dt.datetime.now(dt.timezone.utc))
    digest = ""  # a notebook that exists but cannot be parsed still gets a hash, so a rerun skips it
    try:
        notebook = find_notebook(Path(job.path), f"{assignment.id}.ipynb")
        digest = submission_hash(notebook)
        code = extract(notebook, assignment.extraction)
    except SubmissionFormatError as exc:
        digest = digest or submission_digest(Path(job.path), f"{assignment.id}.ipynb")
        return SubmissionResult(**common, submission_hash=digest, status="error", message=str(exc), results=[])
    session = run_suite(assignment, code, job.isolate, Path(job.trace) if job.trace else None)
    notes = list(code.warnings) + list(session.load_warnings)
    if "isolation" in session.isolation:
        notes.append(f"sandbox isolation {session.isolation['isolation']}")
    return SubmissionResult(**common, submission_hash=digest, status="graded", message="",
                            results=session.results, load_messages="\n".join(notes))


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class Cluster:
    """Where one machine is not enough: grading jobs go to Slurm through submitit.

    `kind` is "slurm", or "local" for submitit's local executor (the same code path, for CI).
    Each job grades one submission; its sandboxes still fork from a warm forkserver on the node.
    """

    kind: str
    folder: Path
    partition: str | None = None


def _run_on_cluster(todo: list[Job], cluster: Cluster):
    import submitit

    assignment = load_course(Path(todo[0].course_root)).get(todo[0].assignment_id)
    executor = submitit.AutoExecutor(folder=cluster.folder, cluster=cluster.kind)
    params = {"timeout_min": math.ceil(assignment.limits.submission_timeout_s / 60) + 10, "cpus_per_task": 2}
    if cluster.kind == "slurm":
        params.update(slurm_partition=cluster.partition, gpus_per_node=1 if assignment.gpu else 0)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    pending = dict(zip(executor.map_array(grade_one, todo), todo))
    try:
        while pending:
            for cluster_job in [j for j in pending if j.done()]:
                job = pending.pop(cluster_job)
                try:
                    yield job, cluster_job.result()
                except Exception as exc:  # submitit re-raises the job's failure here
                    yield job, exc
            time.sleep(0.5)
    except BaseException:
        for cluster_job in pending:
            cluster_job.cancel(check=False)
        raise


def _died_result(job: Job, during: str) -> SubmissionResult:
    """What is recorded for a submission that took a grading worker down twice."""
    return SubmissionResult(
        assignment=job.assignment_id, submission_id=job.submission_id, path=job.path,
        submission_hash=submission_digest(Path(job.path), f"{job.assignment_id}.ipynb"),
        suite_hash=job.suite_hash, grader_version=__version__, device="", graded_at=dt.datetime.now(dt.timezone.utc),
        status="error", results=[],
        message=f"the grader process died {during} (twice; not retried again). "
                "Please tell the course staff; rerun with --force after a fix")


def _run_pool(todo: list[Job], workers: int, forkserver):
    """Yield (job, outcome) per job; a job whose worker died yields (job, None) if it had started."""
    ctx, address = forkserver
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                             initializer=warm.worker_init, initargs=(os.getpid(), address)) as pool:
        pending = {pool.submit(grade_one, job): job for job in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        yield job, None
                    else:
                        yield job, (error if error is not None else future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_jobs(todo: list[Job], jobs: int | None = None, cluster: Cluster | None = None):
    """Yield (job, SubmissionResult or the exception that stopped the grader) as each finishes.

    A worker that dies (a signal, the OOM killer, a crash in a library) takes the pool with it. The
    jobs it was running are suspects: each is retried once alone, and if it kills its worker again it
    is recorded as such, naming the call in progress, so a batch always converges. Jobs that had not
    started yet go on in a fresh pool.
    """
    if not todo:
        return
    if cluster is not None:
        yield from _run_on_cluster(todo, cluster)
        return
    forkserver = warm.start(load_course(Path(todo[0].course_root)).get(todo[0].assignment_id))
    with tempfile.TemporaryDirectory(prefix="autograder-trace-") as traces:
        queue = [dataclasses.replace(job, trace=str(Path(traces) / f"{n}.call")) for n, job in enumerate(todo)]
        suspects: list[Job] = []
        while queue:
            broken = []
            for job, outcome in _run_pool(queue, jobs or default_jobs(), forkserver):
                if outcome is None:
                    broken.append(job)
                else:
                    yield _original(job), outcome
            started = [job for job in broken if Path(job.trace).exists()]
            if broken and not started:  # the pool died before any job began: no worker can start
                for job in broken:
                    yield _original(job), RuntimeError("no grading worker could start")
                break
            suspects += started
            queue = [job for job in broken if not Path(job.trace).exists()]
        for job in suspects:
            Path(job.trace).unlink(missing_ok=True)
            for _, outcome in _run_pool([job], 1, forkserver):
                if outcome is None:
                    call = Path(job.trace).read_text() if Path(job.trace).exists() else ""
                    outcome = _died_result(job, f"while running `{call}`" if call else "while loading this notebook")
                yield _original(job), outcome


def _original(job: Job) -> Job:
    return dataclasses.replace(job, trace=None)


def grade_batch(assignment: Assignment, submissions: dict[str, Path], gradebook: Gradebook, *,
                jobs: int | None = None, force: bool = False, isolate: bool = True, on_done=None,
                cluster: Cluster | None = None):
    """Grade what is not already current in `gradebook`.

    Returns (graded ids, skipped ids, {id: grader failure}). `on_done(job, result_or_error)` is
    called in this process as each submission finishes (progress bars). A submission whose grading
    failed for the grader's own reasons is not recorded, so the next run retries it.
    """
    suite = suite_hash(assignment)
    gpu_runner = nvidia_driver_present()
    todo, skipped = [], []
    for sid, path in submissions.items():
        digest = submission_digest(path, f"{assignment.id}.ipynb")
        if not force and digest and gradebook.is_current(assignment.id, sid, digest, suite, __version__,
                                                         gpu_runner=gpu_runner):
            skipped.append(sid)
        else:
            todo.append(Job(str(assignment.root), assignment.id, sid, str(path.resolve()), suite, isolate))
    graded, failures = [], {}
    for job, outcome in run_jobs(todo, jobs, cluster):
        if isinstance(outcome, BaseException):
            failures[job.submission_id] = f"{type(outcome).__name__}: {outcome}"
        else:
            gradebook.record(outcome)
            graded.append(job.submission_id)
        if on_done:
            on_done(job, outcome)
    return graded, skipped, failures
