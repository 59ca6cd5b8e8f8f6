"""The cluster path of `autograder grade`: chunked jobs, retries of jobs that die, and a real Slurm.

Most tests use submitit's local executor, which runs the same code as `--executor slurm` on this
machine. `test_a_real_slurm_grades_samples_into_the_gradebook` starts a single-node Slurm (slurmctld,
slurmd, munged from Debian's slurm-wlm and munge) in a temporary folder and grades real samples
through it; where Slurm is not installed or does not start, it is skipped with the daemons' logs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from autograder.cli import main
from autograder.course.gradebook import Gradebook
from autograder.grading.scheduler import Job, grade_chunk
from conftest import ASSIGNMENT, CORRECT, write_notebook
from test_cli_grading import CRASH_SUITE

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _jobs_submitted(folder: Path) -> int:
    """submitit writes one `<job id>_submitted.pkl` per job (array task) it submits."""
    return len(list(folder.rglob("*_submitted.pkl")))


def test_each_cluster_job_grades_a_chunk_of_submissions(make_course, tmp_path, capsys):
    root = make_course()
    batch = tmp_path / "batch"
    for n in range(5):
        write_notebook(batch / f"team_{n}.ipynb", [nbformat.v4.new_code_cell(CORRECT if n % 2 else "import torch")])
    db, jobs = tmp_path / "gradebook.db", tmp_path / "jobs"
    assert main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db),
                 "--executor", "submitit-local", "--cluster-folder", str(jobs), "--chunk-size", "2"]) == 0
    capsys.readouterr()
    assert _jobs_submitted(jobs) == 3  # 2 + 2 + 1
    with Gradebook.open(db) as gradebook:
        scores = {s.submission_id: s.earned for s in gradebook.submissions(ASSIGNMENT)}
    assert scores == {f"team_{n}": float(n % 2) for n in range(5)}
    assert [p.name for p in jobs.iterdir() if p.name.startswith("batch-")] == []  # outcome files are cleaned up


def test_a_chunk_whose_job_dies_loses_nothing_and_records_nothing_twice(make_course, tmp_path, capsys):
    """The first submission kills its cluster job before the others start. They are graded in a retry
    job; the killer is retried alone, kills that job too and is reported as a grader failure."""
    root = make_course(grader_tests={"test_crash.py": CRASH_SUITE})
    batch = tmp_path / "batch"
    paths = [write_notebook(batch / f"{team}.ipynb", [nbformat.v4.new_code_cell(f"def output():\n    return {out!r}\n")])
             for team, out in (("a_crash", "crash"), ("b_ok", "ok"), ("c_ok", "ok"))]
    db, jobs = tmp_path / "gradebook.db", tmp_path / "jobs"
    command = ["--course-root", str(root), "grade", ASSIGNMENT, *map(str, paths), "--gradebook", str(db),
               "--executor", "submitit-local", "--cluster-folder", str(jobs), "--chunk-size", "3"]
    assert main(command) == 3
    out, err = capsys.readouterr()
    assert _jobs_submitted(jobs) == 3  # the chunk, then a_crash alone and b_ok + c_ok together
    progress = [line for line in out.splitlines() if " graded, " in line]
    assert sorted(line.split(":")[0] for line in progress) == ["a_crash", "b_ok", "c_ok"]  # each once
    assert "| 3/3 graded, " in progress[-1] and progress[-1].endswith(", 0 failing, 1 grader failures")
    assert "grader failure on a_crash (not recorded, rerun to retry): RuntimeError: the cluster job grading it " \
           "failed twice while running `output`" in " ".join(err.split())
    with Gradebook.open(db) as gradebook:
        recorded = {s.submission_id: (s.status, s.earned) for s in gradebook.submissions(ASSIGNMENT)}
    assert recorded == {"b_ok": ("graded", 1.0), "c_ok": ("graded", 1.0)}


def test_a_requeued_chunk_skips_the_submissions_it_already_finished(tmp_path):
    """Slurm reruns a requeued job from the start; what it wrote before is kept, not graded again."""
    job = Job(str(tmp_path / "no_course"), ASSIGNMENT, "team", str(tmp_path / "team.ipynb"), "suite",
              trace=str(tmp_path / "0.call"))
    (tmp_path / "0.result").write_bytes(pickle.dumps("graded before the requeue"))
    grade_chunk([job])  # grading it again would fail: there is no course at `no_course`
    assert pickle.loads((tmp_path / "0.result").read_bytes()) == "graded before the requeue"
    assert not (tmp_path / "0.call").exists()


def test_chunk_size_must_be_positive(make_course, tmp_path, capsys):
    submission = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(CORRECT)])
    assert main(["--course-root", str(make_course()), "grade", ASSIGNMENT, str(submission), "--gradebook",
                 str(tmp_path / "gradebook.db"), "--executor", "submitit-local", "--chunk-size", "0"]) == 2
    assert capsys.readouterr().err == "autograder: error: --chunk-size must be at least 1, not 0\n"
    assert not (tmp_path / "gradebook.db").exists()


# --- a real single-node Slurm -------------------------------------------------------------------------

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel")
SAMPLES = ("correct", "partial", "raises")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(folder: Path, node: str) -> str:
    """Single node, everything in `folder`; no systemd, cgroups or accounting daemon needed."""
    return "\n".join([
        "ClusterName=autograder-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={folder}/munge.sock",
        "CredType=cred/munge",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log",
        f"SlurmdLogFile={folder}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "ReturnToService=2",
        "MailProg=/bin/true",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _logs(folder: Path) -> str:
    lines = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log"):
        path = folder / name
        tail = path.read_text(errors="replace").splitlines()[-8:] if path.exists() else ["(no log)"]
        lines += [f"{name}:"] + [f"  {line}" for line in tail]
    return "\n".join(lines)


def _stop(folder: Path) -> None:
    """Cancel what is left in the queue and wait until its job steps are gone (they need slurmd to end),
    then end the daemons this fixture started, by the ids in their pid files."""
    if (folder / "slurmctld.pid").exists():
        subprocess.run(["scancel", "--partition=test"], capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "--noheader"], capture_output=True, text=True).stdout.strip():
            time.sleep(1)
    for name in ("slurmd.pid", "slurmctld.pid"):
        path = folder / name
        if path.exists():
            try:
                os.kill(int(path.read_text()), 15)
            except (ProcessLookupError, ValueError):
                pass
    if (folder / "munge.sock").exists():
        subprocess.run(["munged", "--stop", f"--socket={folder}/munge.sock"], capture_output=True)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node Slurm whose clients find it through SLURM_CONF; its folder."""
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    folder = tmp_path_factory.mktemp("slurm")
    (folder / "munge.key").write_bytes(os.urandom(1024))
    (folder / "munge.key").chmod(0o600)
    (folder / "state").mkdir()
    (folder / "slurm.conf").write_text(_slurm_conf(folder, socket.gethostname().split(".")[0]))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(folder / "slurm.conf"))
        try:
            for command in (["munged", "--force", f"--key-file={folder}/munge.key", f"--socket={folder}/munge.sock",
                             f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid",
                             f"--seed-file={folder}/munged.seed"], ["slurmctld"], ["slurmd"]):
                started = subprocess.run(command, capture_output=True, text=True)
                if started.returncode:
                    pytest.skip(f"{command[0]} did not start: {started.stderr.strip()}\n{_logs(folder)}")
            deadline = time.monotonic() + 60
            state = ""
            while time.monotonic() < deadline and state != "idle":
                time.sleep(1)
                state = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                                       text=True).stdout.strip()
            if state != "idle":
                pytest.skip(f"the Slurm node is not idle after 60 s (sinfo: {state or 'nothing'})\n{_logs(folder)}")
            yield folder
        finally:
            _stop(folder)


def test_a_real_slurm_grades_samples_into_the_gradebook(slurm, tmp_path, capsys):
    """Three 01_intro samples through sbatch, in two chunk jobs, score what their expected.json says."""
    batch = tmp_path / "batch"
    batch.mkdir()
    for sample in SAMPLES:
        shutil.copy(ROOT / "samples" / "01_intro" / f"{sample}.ipynb", batch)
    db, jobs = tmp_path / "gradebook.db", tmp_path / "jobs"
    status = main(["--course-root", str(ROOT), "grade", "01_intro", str(batch), "--gradebook", str(db),
                   "--executor", "slurm", "--slurm-partition", "test", "--cluster-folder", str(jobs),
                   "--chunk-size", "2"])
    out, err = capsys.readouterr()
    assert status == 0, f"{out}\n{err}\n{_logs(slurm)}"
    expected = json.loads((ROOT / "samples" / "01_intro" / "expected.json").read_text())
    with Gradebook.open(db) as gradebook:
        scores = {s.submission_id: s.earned for s in gradebook.submissions("01_intro")}
    assert scores == {sample: expected[sample]["points"] for sample in SAMPLES}
    assert list(jobs.glob("*_0_log.out")), "the jobs ran through Slurm (submitit names array tasks <job>_<task>)"
    log = (slurm / "slurmctld.log").read_text()
    assert log.count("sched: Allocate JobId=") == 2, "one Slurm job per chunk of 2"


def test_a_real_slurm_job_that_dies_is_noticed_retried_once_and_reported(slurm, make_course, tmp_path, capsys):
    """This Slurm has no accounting (no sacct): the grader learns from squeue that the job is gone."""
    root = make_course(grader_tests={"test_crash.py": CRASH_SUITE})
    submission = write_notebook(tmp_path / "team_crash.ipynb", [nbformat.v4.new_code_cell(
        "def output():\n    return 'crash'\n")])
    db = tmp_path / "gradebook.db"
    status = main(["--course-root", str(root), "grade", ASSIGNMENT, str(submission), "--gradebook", str(db),
                   "--executor", "slurm", "--cluster-folder", str(tmp_path / "jobs")])
    out, err = capsys.readouterr()
    assert status == 3, f"{out}\n{err}\n{_logs(slurm)}"
    assert "grader failure on team_crash (not recorded, rerun to retry): RuntimeError: the cluster job grading it " \
           "failed twice while running `output`; cluster job" in " ".join(err.split())
    with Gradebook.open(db) as gradebook:
        assert gradebook.submissions(ASSIGNMENT) == []
