"""Stage 7: grade a batch of submissions in parallel and record each one as soon as it is done.

Locally (the default) a pool of workers on this machine; on a cluster, Slurm jobs through submitit,
each grading a chunk of submissions.

The CLI process never imports torch. Grading workers and their sandboxes fork from one warm
forkserver (`autograder.grading.warm`) that imported what the assignment needs once and never holds a
reference value or a submission; each worker runs the hidden suite per submission. Each finished
submission is committed to the gradebook at once (on a cluster, when its chunk's job ends), so an
interrupted batch loses nothing and a rerun skips what is already graded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import os
import pickle
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from autograder import __version__
from autograder.course.config import Assignment, load_course
from autograder.grading.devices import nvidia_driver_present
from autograder.grading.handins import (SubmissionFormatError, find_notebook, notebook_file, submission_digest,
                               submission_hash)
from autograder.course.gradebook import Gradebook, SubmissionResult
from autograder.grading import timings, warm


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
    only_gpu: bool = False  # run only the GPU-marked tests (`grade --pending-gpu`)


def suite_hash(assignment: Assignment) -> str:
    """Changes whenever a test file, the assignment's grading settings or the grader change."""
    digest = hashlib.sha256(f"{__version__}\n{assignment.tolerances}\n{assignment.limits}\n"
                            f"{assignment.extraction}\n".encode())
    for path in sorted(assignment.tests_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(assignment.tests_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def grade_one(job: Job) -> SubmissionResult:
    """Runs in a worker: read, extract and grade one submission, timing its stages; never raises for
    the student's sake."""
    if job.trace:
        Path(job.trace).write_text("")  # this job has started: a suspect if the worker dies now
    stages, began = timings.Stages(), time.time()
    if warm.worker_started is not None:  # this worker's first submission
        (requested_at, ready_at), warm.worker_started = warm.worker_started, None
        stages.add("forkserver start", ready_at - requested_at)
        stages.add("worker start", began - ready_at)
    with timings.recording(stages):
        result = _graded(job)
    stages.span = (began, time.time())
    return dataclasses.replace(result, stages=stages)


def _graded(job: Job) -> SubmissionResult:
    from autograder.grading.devices import device_name
    from autograder.grading.extraction import extract  # nbformat: seconds to import, for the workers only
    from autograder.grading.oracle import run_suite
    from autograder.grading.review import review_notes

    stages = timings.current()
    assignment = load_course(Path(job.course_root)).get(job.assignment_id)
    common = dict(assignment=assignment.id, submission_id=job.submission_id, path=job.path,
                  suite_hash=job.suite_hash, grader_version=__version__, device=device_name(),
                  graded_at=dt.datetime.now(dt.timezone.utc))
    digest = ""  # a notebook that exists but cannot be parsed still gets a hash, so a rerun skips it
    try:
        with stages.timed("notebook read and extraction"):
            found = find_notebook(Path(job.path), f"{assignment.id}.ipynb")
            digest = submission_hash(found, f"{assignment.id}.ipynb")
            with notebook_file(found, f"{assignment.id}.ipynb") as notebook:
                code = extract(notebook, assignment.extraction)
    except SubmissionFormatError as exc:
        digest = digest or submission_digest(Path(job.path), f"{assignment.id}.ipynb")
        return SubmissionResult(**common, submission_hash=digest, status="error", message=str(exc), results=[])
    session = run_suite(assignment, code, job.isolate, Path(job.trace) if job.trace else None, job.only_gpu)
    notes = list(code.warnings) + review_notes(code) + list(session.load_warnings)
    return SubmissionResult(**common, submission_hash=digest, status="graded", message="",
                            results=session.results, load_messages="\n".join(notes))


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


QUEUE_CHECK_S = 10  # how often `squeue` is asked which jobs are still pending or running


@dataclass(frozen=True)
class Cluster:
    """Where one machine is not enough: grading jobs go to Slurm through submitit.

    `kind` is "slurm", or "local" for submitit's local executor (the same code path, for CI). Each
    job grades a chunk of `chunk_size` submissions in one process, so the start of its sandbox
    forkserver (torch and transformers imported, seconds) is paid once per chunk, not per submission.
    """

    kind: str
    folder: Path
    partition: str | None
    chunk_size: int


def _result_file(job: Job) -> Path:
    return Path(job.trace).with_suffix(".result")


def grade_chunk(chunk: list[Job]) -> None:
    """Runs in one cluster job: grade each submission and write its outcome at once, next to its trace
    on the shared file system, so a job that dies or is preempted loses only the submission in
    progress. A requeued job skips what it already wrote. A grader failure of one submission (an
    exception) is its outcome and does not stop the others."""
    for job in chunk:
        if _result_file(job).exists():
            continue
        try:
            outcome = grade_one(job)
        except Exception as exc:  # as the pool reports it; one that cannot be pickled fails the job
            outcome = exc
        partial = _result_file(job).with_suffix(".partial")
        partial.write_bytes(pickle.dumps(outcome))
        partial.replace(_result_file(job))  # never read half written


def _read_outcome(job: Job):
    """The outcome a cluster job wrote for `job`, or None. The file is written by the grading process
    (trusted code; the sandbox never sees the cluster folder), as submitit's own result files are."""
    path = _result_file(job)
    return pickle.loads(path.read_bytes()) if path.exists() else None


def _job_failure(cluster_job) -> str:
    """One line on why a cluster job ended without grading all of its chunk, and where its log is."""
    from submitit.core.utils import FailedJobError

    error = cluster_job.exception() if cluster_job.done() else None  # it waits while done() is false
    if isinstance(error, FailedJobError):  # the last line of the job's traceback, between two rules
        reason = str(error).split("-" * 22)[1].strip().splitlines()[-1]
    elif error is not None:
        reason = str(error).strip().splitlines()[0]
    else:  # it left the Slurm queue without a result: killed, so the last line of its log says how
        log = [line.strip() for line in (cluster_job.stderr() or "").splitlines() if line.strip()]
        reason = log[-1] if log else "it left the queue without a result"
    return f"cluster job {cluster_job.job_id}: {reason} (log: {cluster_job.paths.stderr})"


def _left_the_queue(cluster_jobs: list) -> list:
    """The jobs Slurm no longer lists as pending or running. submitit learns that a job ended from its
    result file or from `sacct`; on a cluster without accounting a job that died writes neither and
    would look pending forever. A failed `squeue` (the controller is busy) settles nothing."""
    if not cluster_jobs:
        return []
    listed = subprocess.run(["squeue", "--me", "--array", "--noheader", "--format=%i"],
                            capture_output=True, text=True)
    return [] if listed.returncode else [j for j in cluster_jobs if j.job_id not in listed.stdout.split()]


def _without_sacct_warnings(record: logging.LogRecord) -> bool:
    """submitit warns (on stdout and stderr) at each poll where `sacct` fails, every minute on a cluster
    without accounting, where `_left_the_queue` does sacct's job."""
    return "Bypassing sacct error" not in record.getMessage()


def _run_on_cluster(todo: list[Job], cluster: Cluster):
    """Yield (job, outcome) as each chunk job ends. The submissions a failed or preempted job did not
    finish are retried once: the one in progress alone (it may be what killed the job), the others
    together. A submission whose second job fails too is a grader failure (not recorded, so a rerun
    retries it). Each outcome is read from its own file once: nothing is lost or recorded twice."""
    import submitit

    logging.getLogger("submitit").addFilter(_without_sacct_warnings)
    assignment = load_course(Path(todo[0].course_root)).get(todo[0].assignment_id)
    executor = submitit.AutoExecutor(folder=cluster.folder, cluster=cluster.kind)
    params = {"timeout_min": math.ceil(cluster.chunk_size * assignment.limits.submission_timeout_s / 60) + 10,
              "cpus_per_task": 2}
    if cluster.kind == "slurm":
        params.update(slurm_partition=cluster.partition, gpus_per_node=1 if assignment.gpu else None)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    cluster.folder.mkdir(parents=True, exist_ok=True)
    batch = Path(tempfile.mkdtemp(prefix="batch-", dir=cluster.folder))
    queue = [dataclasses.replace(job, trace=str(batch / f"{n}.call")) for n, job in enumerate(todo)]
    running: dict = {}
    retried: set[str] = set()

    def chunks(jobs: list[Job]) -> list[list[Job]]:
        return [jobs[i:i + cluster.chunk_size] for i in range(0, len(jobs), cluster.chunk_size)]

    def submit(batches: list[list[Job]]) -> None:
        for job in (job for chunk in batches for job in chunk):
            Path(job.trace).unlink(missing_ok=True)  # it exists again once a job starts grading it
        if batches:
            running.update(zip(executor.map_array(grade_chunk, batches), batches))

    try:
        submit(chunks(queue))
        next_queue_check = time.monotonic() + QUEUE_CHECK_S
        while running:
            ended = [j for j in running if j.done()]
            if cluster.kind == "slurm" and time.monotonic() > next_queue_check:
                ended += _left_the_queue([j for j in running if j not in ended and j.state == "UNKNOWN"])
                next_queue_check = time.monotonic() + QUEUE_CHECK_S
            for cluster_job in ended:
                chunk = running.pop(cluster_job)
                unfinished = []
                for job in chunk:
                    outcome = _read_outcome(job)
                    if outcome is not None:
                        yield _original(job), outcome
                    else:
                        unfinished.append(job)
                if not unfinished:
                    continue
                failure = _job_failure(cluster_job)
                for job in [j for j in unfinished if j.trace in retried]:
                    call = Path(job.trace).read_text() if Path(job.trace).exists() else ""
                    during = f" while running `{call}`" if call else ""
                    yield _original(job), RuntimeError(f"the cluster job grading it failed twice{during}; {failure}")
                again = [j for j in unfinished if j.trace not in retried]
                retried.update(j.trace for j in again)
                alone = [[j] for j in again if Path(j.trace).exists()]
                together = [j for j in again if not Path(j.trace).exists()]
                submit(alone + chunks(together))
            time.sleep(0.5)
    except BaseException:
        for cluster_job in running:
            cluster_job.cancel(check=False)
        raise
    finally:
        shutil.rmtree(batch, ignore_errors=True)


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
    with warm.pool(forkserver, min(workers, len(todo))) as pool:
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
    # A worker still dying (a batch interrupted with Ctrl-C) may write its trace while the folder goes:
    # that must not turn the interruption into a crash.
    with tempfile.TemporaryDirectory(prefix="autograder-trace-", ignore_cleanup_errors=True) as traces:
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


def with_gpu_results(cpu: SubmissionResult, gpu: SubmissionResult) -> SubmissionResult:
    """The CPU grade with each test it could not run ("needs-gpu") replaced by the GPU runner's result."""
    ran = {r.test_id: r for r in gpu.results}
    return dataclasses.replace(
        cpu, results=[ran.get(r.test_id, r) if r.status == "needs-gpu" else r for r in cpu.results],
        device=f"{cpu.device}; GPU tests on {gpu.device}", graded_at=gpu.graded_at,
        load_messages="\n".join(filter(None, [cpu.load_messages, gpu.load_messages])))


def complete_gpu_tests(assignment: Assignment, submissions: dict[str, Path], gradebook: Gradebook, *,
                       jobs: int | None = None, isolate: bool = True, on_start=None, on_done=None):
    """On a GPU runner: run only the GPU-marked tests of the submissions whose recorded grade waits for
    them, and complete those grades in place; the CPU results stay. A submission changed since, or
    graded by another suite, needs a full grade and is left out. Returns (completed, left out, failures)."""
    suite = suite_hash(assignment)
    todo, left_out, cpu_grades = [], [], {}
    for sid, path in submissions.items():
        stored = gradebook.get(assignment.id, sid)
        waiting = stored is not None and any(r.status == "needs-gpu" for r in stored.results)
        if waiting and stored.suite_hash == suite and stored.submission_hash == submission_digest(
                path, f"{assignment.id}.ipynb"):
            todo.append(Job(str(assignment.root), assignment.id, sid, str(path.resolve()), suite, isolate,
                            only_gpu=True))
            cpu_grades[sid] = stored
        else:
            left_out.append(sid)
    if on_start:
        on_start(len(todo))
    completed, failures = _record_as_they_finish(
        run_jobs(todo, jobs), gradebook, on_done,
        merge=lambda job, outcome: with_gpu_results(cpu_grades[job.submission_id], outcome))
    return completed, left_out, failures


def _record_as_they_finish(outcomes, gradebook: Gradebook, on_done, merge=None):
    """Commit each finished submission at once (timing the write for its profile); returns the ids
    recorded and {id: failure}. A grader failure is not recorded, so a rerun retries it. With `merge`
    (GPU results completing a CPU grade), a notebook that could not be read is a failure too: it must
    not replace the grade it was to complete."""
    recorded, failures = [], {}
    for job, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failures[job.submission_id] = f"{type(outcome).__name__}: {outcome}"
        elif merge is not None and outcome.status == "error":
            failures[job.submission_id] = outcome.message
        else:
            begin = time.perf_counter()
            gradebook.record(outcome if merge is None else merge(job, outcome))
            outcome.stages["gradebook write"] = time.perf_counter() - begin
            recorded.append(job.submission_id)
        if on_done:
            on_done(job, outcome)
    return recorded, failures


def grade_batch(assignment: Assignment, submissions: dict[str, Path], gradebook: Gradebook, *,
                jobs: int | None = None, force: bool = False, isolate: bool = True, on_start=None, on_done=None,
                cluster: Cluster | None = None):
    """Grade what is not already current in `gradebook`.

    Returns (graded ids, skipped ids, {id: grader failure}). For progress reports, `on_start(n)` is
    called with the number of submissions to grade once the unchanged ones are set aside, and
    `on_done(job, result_or_error)` in this process as each one finishes. A submission whose grading
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
    if on_start:
        on_start(len(todo))
    graded, failures = _record_as_they_finish(run_jobs(todo, jobs, cluster), gradebook, on_done)
    return graded, skipped, failures
