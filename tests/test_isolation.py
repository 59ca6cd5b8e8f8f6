"""The sandbox's walls, attacked as a student with root-level Python would: file walks, writes,
signals, forks, the network. CI runs as root (the plain namespace path) and also forces the
user-namespace path an unprivileged grader takes."""

from __future__ import annotations

import os
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
    unreadable = [p for p in isolation.whitelist() if not _readable_by_others(p)]
    if request.param and os.getuid() == 0 and unreadable:
        pytest.skip(f"the user-namespace path needs an interpreter and libraries any uid can read; not {unreadable[0]}")
    s = student_session(*course)
    s.user_namespace = request.param
    call(s, "identity")
    if "isolation" in s.isolation:
        pytest.skip(f"this path cannot run here (an unprivileged grader needs an interpreter and libraries its "
                    f"uid can read; the kernel must allow user namespaces): {s.isolation['isolation']}")
    yield s
    s.close()


@pytest.fixture
def planted(course, tmp_path):
    """Files a submission must never find: a second clone of the course with its hidden tests, a
    gradebook in a temporary folder and in HOME, another batch's hand-ins, a secret under /root."""
    marker = f"planted{uuid.uuid4().hex[:8]}"
    (tmp_path / "clone").mkdir()
    clone = write_course(tmp_path / "clone", "x = 1", {f"test_{marker}.py": "EXPECTED = 1\n"}, points=1)
    paths = [clone / "grader_tests", tmp_path / f"gradebook_{marker}.db", Path.home() / f"gradebook_{marker}.db",
             tmp_path / "other_batch" / f"team_{marker}" / "notebook.ipynb", Path("/root") / f"secret_{marker}"]
    made = []
    for path in paths[1:]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("secret")
            made.append(path)
        except OSError:
            pass
    yield marker, course[0]
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
    with pytest.raises(SubmissionError, match="Network is unreachable|Connection refused|OSError"):
        call(session, "connect", 22)


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
    session = student_session(*course, call_timeout_s=3)
    try:
        bomber = call(session, "identity")[0]
        with pytest.raises(SandboxTimeout):
            call(session, "fork_bomb")
        assert call(session, "identity")[2] == [1]  # the next call gets a fresh sandbox
        deadline = time.monotonic() + 10
        while [p for p in _processes() if _field(p, "Uid") == bomber] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in _processes() if _field(p, "Uid") == bomber]
    finally:
        session.close()


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
