"""The sandbox's walls, attacked as a student with root-level Python would: file walks, writes,
signals, forks, the network. CI runs them as root (the plain namespace path, and the user-namespace
path forced where any uid can read the interpreter) and again as an ordinary user with an interpreter
built from Debian's python3 (`.ci/ordinary_user`), the path a TA's own account takes. Where a wall
cannot be built, the tests fail: none is skipped for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import nbformat
import pytest
import torch

from autograder.grading import isolation, zoo
from autograder.grading.oracle import SubmissionError
from autograder.grading.sandbox import SandboxTimeout
from conftest import call, student_session, write_course, write_notebook

ATTACKS = textwrap.dedent('''
    import os, signal, socket, time

    def walk(marker):
        found = []
        for folder, dirs, files in os.walk("/"):
            if folder.startswith(("/proc", "/sys")):
                dirs[:] = []
                continue
            found += [os.path.join(folder, n) for n in dirs + files if marker in n]
        return found, sorted(os.listdir("/"))

    def imports(model, ids):
        import bitsandbytes, numpy, transformers
        return numpy.__name__, transformers.__name__, bitsandbytes.__name__, model(ids).logits

    def try_write(path):
        try:
            with open(path, "w") as f:
                f.write("planted")
        except OSError as exc:
            return type(exc).__name__
        return "written"

    def exists(path):
        return os.path.exists(path)

    def connect(port):
        socket.create_connection(("127.0.0.1", port), timeout=2)
        return "connected"

    def identity():
        return os.getuid(), os.getpid(), sorted(int(p) for p in os.listdir("/proc") if p.isdigit())

    def signal_everyone(how):
        attacks = {"killpg": lambda: os.killpg(0, signal.SIGKILL), "kill0": lambda: os.kill(0, signal.SIGKILL),
                   "kill-1": lambda: os.kill(-1, signal.SIGKILL),
                   "parent": lambda: os.kill(os.getppid(), signal.SIGKILL)}
        try:
            attacks[how]()
        except OSError as exc:
            return type(exc).__name__
        return "sent"

    def signal_guessed(pids):
        reached = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                reached.append(pid)
            except OSError:
                pass
        return reached

    def fork_until_refused(seconds):
        children = 0
        while children < 10_000:
            try:
                if os.fork() == 0:
                    time.sleep(seconds)
                    os._exit(0)
            except OSError:
                return children
            children += 1
        return children

    def fork_bomb():
        while True:
            try:
                os.fork()
            except OSError:
                pass
''')


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = write_course(tmp_path_factory.mktemp("course"), "x = 1", {"test_secret.py": "EXPECTED = 42\n"}, points=1,
                        call_timeout_s=30, submission_timeout_s=600, memory_mb=2048)
    return root, write_notebook(root / "submissions" / "team.ipynb", [nbformat.v4.new_code_cell(ATTACKS)])


@pytest.fixture(scope="module", params=[False, True], ids=["namespaces", "user-namespace"])
def session(request, course, tmp_path_factory):
    """A sandbox behind its walls; one that cannot build them raises `WallsMissing` here, and every test
    that uses it fails. As root, the user-namespace path gives the sandbox a uid of its own, which must
    be able to read the interpreter: where only root can (an interpreter under /root), that path is the
    ordinary-user run's (`.ci/ordinary_user`), which takes it with nothing skipped."""
    unreadable = [p for p in isolation.whitelist() if not _readable_by_others(p)]
    if request.param and os.getuid() == 0 and unreadable:
        pytest.skip(f"as root, the user-namespace path needs an interpreter any uid can read, not {unreadable[0]}; "
                    ".ci/ordinary_user runs it as an ordinary user")
    s = student_session(*course)
    s.user_namespace = request.param
    call(s, "identity")
    yield s
    s.close()


def test_every_wall_is_reported_built(session):
    as_root = os.getuid() == 0 and not session.user_namespace
    assert session.isolation == {
        "namespaces": "namespaces" if as_root else "user namespaces", "files": "whitelist root, read-only; private /tmp",
        "network": "none", "processes": "own PID namespace", "privileges": session.isolation["privileges"]}
    uid = int(session.isolation["privileges"].removeprefix("uid ").removesuffix(", no capabilities"))
    assert uid > isolation.SANDBOX_UID_BASE if as_root else uid == 0  # in a user namespace, the grader's own uid


@pytest.fixture
def planted(course, tmp_path):
    """Files a submission must never find: a second clone of the course with its hidden tests, a
    gradebook in a temporary folder and in HOME, another batch's hand-ins, a secret in HOME. Each is
    written, or the fixture fails: a walk that finds nothing proves nothing about a file never made."""
    marker = f"planted{uuid.uuid4().hex[:8]}"
    (tmp_path / "clone").mkdir()
    clone = write_course(tmp_path / "clone", "x = 1", {f"test_{marker}.py": "EXPECTED = 1\n"}, points=1)
    made = [tmp_path / f"gradebook_{marker}.db", Path.home() / f"gradebook_{marker}.db",
            tmp_path / "other_batch" / f"team_{marker}" / "notebook.ipynb", Path.home() / f".secret_{marker}"]
    try:
        for path in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("secret")
        assert all(p.read_text() == "secret" for p in made) and (clone / "grader_tests").is_dir()
        yield marker, course[0]
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def test_a_walk_of_the_whole_file_system_finds_nothing_of_the_machine(session, planted):
    marker, course_root = planted
    found, top_level = call(session, "walk", marker)
    assert found == []
    assert not call(session, "exists", str(course_root))
    allowed = {p.strip("/").split("/")[0] for p in isolation.whitelist()} | {"dev", "etc", "proc", "tmp"}
    assert set(top_level) <= allowed, set(top_level) - allowed


def test_the_libraries_import_and_zoo_models_run_inside(session):
    model = zoo.tiny_model("llama")
    ids = torch.tensor([[1, 2, 3]])
    *names, logits = call(session, "imports", model, ids)
    assert names == ["numpy", "transformers", "bitsandbytes"]
    torch.testing.assert_close(logits, model(ids).logits)


@pytest.mark.parametrize("path", ["/planted", "/dev/planted", "/dev/shm/planted", "/proc/sys/kernel/hostname",
                                  "/sys/kernel/planted", "/usr/planted", "/etc/passwd", "/root/planted"])
def test_nothing_is_writable_but_the_private_tmp(session, path):
    assert call(session, "try_write", path) != "written"


def test_the_private_tmp_is_gone_for_the_next_sandbox(session, course):
    assert call(session, "try_write", "/tmp/left_behind") == "written"
    assert call(session, "exists", "/tmp/left_behind")
    successor = student_session(*course)
    successor.user_namespace = session.user_namespace
    try:
        assert not call(successor, "exists", "/tmp/left_behind")
    finally:
        successor.close()


def test_no_network(session):
    """A port that listens on the host is out of reach: the sandbox's network namespace has no route to
    it (a process sharing the host's network would connect, and a closed port's "refused" proves nothing)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        with pytest.raises(SubmissionError, match="Network is unreachable"):
            call(session, "connect", server.getsockname()[1])
        with pytest.raises(TimeoutError):
            server.accept()


def test_the_sandbox_is_unprivileged_and_sees_only_itself(session):
    uid, pid, visible = call(session, "identity")
    assert pid == 1 and visible == [1]
    assert uid != 0 or session.isolation["namespaces"] == "user namespaces"


@pytest.mark.parametrize("how", ["killpg", "kill0", "kill-1", "parent"])
def test_signals_reach_nothing_outside_the_sandbox(session, how):
    forkserver_children = _children(os.getpid())
    call(session, "signal_everyone", how)
    assert call(session, "signal_guessed", [os.getpid(), os.getppid(), *forkserver_children, *range(2, 400)]) == []
    assert call(session, "identity")[1] == 1  # the sandbox itself is still serving
    assert _children(os.getpid()) >= forkserver_children


def test_forks_are_bounded_and_ended_with_the_call(session):
    children = call(session, "fork_until_refused", 30)
    assert 0 < children < isolation.MAX_PROCESSES
    assert call(session, "identity")[2] == [1]  # the strays were killed after the call


def test_an_unbounded_fork_bomb_loses_its_call_and_leaves_nothing_behind(course):
    """Nothing of the bomb's PID namespace outlives its sandbox (its uid would not tell: in a user
    namespace the sandbox runs as the grader's own uid)."""
    session = student_session(*course, call_timeout_s=3)
    try:
        call(session, "identity")
        namespace = {_pid_namespace(p) for p in _children(session._sandbox.process.pid)}
        assert len(namespace) == 1 and None not in namespace
        with pytest.raises(SandboxTimeout):
            call(session, "fork_bomb")
        assert call(session, "identity")[2] == [1]  # the next call gets a fresh sandbox
        deadline = time.monotonic() + 10
        while [p for p in _processes() if _pid_namespace(p) in namespace] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in _processes() if _pid_namespace(p) in namespace]
    finally:
        session.close()


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _readable_by_others(path: str) -> bool:
    path = os.path.realpath(path)
    folders = [os.path.dirname(path)] if os.path.isfile(path) else [path]
    while folders[-1] != "/":
        folders.append(os.path.dirname(folders[-1]))
    return all(os.stat(folder).st_mode & 0o005 == 0o005 for folder in folders)


def _children(pid: int) -> set[int]:
    return {p for p in _processes() if _field(p, "PPid") == pid}


def _processes() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _field(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


OWNER = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import call, student_session

if __name__ == "__main__":
    session = student_session({root!r}, {notebook!r})
    session._ensure_sandbox()
    print(session._sandbox.process.pid, flush=True)
    call(session, "fork_bomb")  # spins until the grader kills it; here the grader itself is killed first
'''


def test_a_sandbox_ends_with_the_grading_process_it_works_for(course, tmp_path):
    """A worker killed with SIGKILL (OOM killer, kill -9) must not leave a spinning sandbox behind."""
    root, notebook = course
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(tests=str(Path(__file__).parent), root=str(root), notebook=str(notebook)))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    sandbox = int(owner.stdout.readline())
    time.sleep(1)
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 10
    while _field(sandbox, "PPid") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _field(sandbox, "PPid") is None


# Runs argv (after the script's name) as a machine that forbids unprivileged user namespaces would: in
# a user namespace whose user.max_user_namespaces is 0, as uid 1000 there (no capabilities once it execs),
# the grader's own uid outside.
SHUT_OUT = '''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000) != 0:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
for name, text in (("setgroups", "deny"), ("uid_map", f"1000 {uid} 1"), ("gid_map", f"1000 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
with open("/proc/sys/user/max_user_namespaces", "w") as f:
    f.write("0")
os.execv(sys.argv[1], sys.argv[1:])
'''
GRADE = "import sys; from autograder.cli import main; sys.exit(main(sys.argv[1:]))"
SUITE = "import pytest\n\n@pytest.mark.points(1)\ndef test_root_exists(submission):\n    assert submission.exists('/')\n"


def shut_out(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SHUT_OUT, sys.executable, *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    root = write_course(tmp_path_factory.mktemp("graded"), "x = 1", {"test_root.py": SUITE}, points=1)
    write_notebook(root / "submissions" / "team" / "01_demo.ipynb", [nbformat.v4.new_code_cell(ATTACKS)])
    return root


def test_grade_stops_before_the_batch_where_user_namespaces_are_forbidden_and_says_what_to_change(graded_course,
                                                                                                   tmp_path):
    gradebook = tmp_path / "gradebook.db"
    done = shut_out("-c", GRADE, "--course-root", str(graded_course), "grade", "01_demo",
                    str(graded_course / "submissions"), "--gradebook", str(gradebook))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "autograder: error: the sandbox cannot build its walls on this machine, so no submission is graded: "
        "user.max_user_namespaces is 0: allow them with `sudo sysctl -w user.max_user_namespaces=15000` (and "
        "`user.max_user_namespaces = 15000` in /etc/sysctl.d/99-autograder.conf to keep it after a reboot). Or grade "
        "without them (each submission still runs in a process of its own) with --no-isolation"]
    assert not gradebook.exists()
    # Asked for, grading without walls runs.
    done = shut_out("-c", GRADE, "--course-root", str(graded_course), "grade", "01_demo",
                    str(graded_course / "submissions"), "--gradebook", str(gradebook), "--no-isolation")
    assert done.returncode == 0, done.stderr
    assert "team: 1/1" in done.stdout


def test_a_sandbox_that_cannot_build_its_walls_runs_no_student_code(graded_course):
    """Where `grade` did not ask first (a Slurm node, `verify`, a suite run by hand), the sandbox refuses,
    and the submission's grading fails as the grader's failure, recorded for no one."""
    check = ("import sys; from pathlib import Path; from autograder.course.config import load_course; "
             "from autograder.grading.extraction import extract; from autograder.grading.oracle import run_suite; "
             "from autograder.grading.isolation import WallsMissing\n"
             "a = load_course(Path(sys.argv[1])).get('01_demo')\n"
             "try:\n    run_suite(a, extract(Path(sys.argv[1]) / 'submissions/team/01_demo.ipynb'))\n"
             "except WallsMissing as exc:\n    print(exc)")
    done = shut_out("-c", check, str(graded_course))
    assert done.stdout.strip() == ("the sandbox could not build its walls: [Errno 28] unshare: No space left on device"), \
        done.stderr
