"""The batch's forkserver: it preloads what the assignment uses and nothing from the course folder,
and sandboxes fork from it, never from the worker that holds reference values."""

from __future__ import annotations

import os

import nbformat
import pytest

from autograder.grading import warm
from autograder.grading.warm import pages
from autograder.course.config import load_course
from autograder.course.gradebook import Gradebook
from autograder.grading.scheduler import grade_batch
from conftest import ASSIGNMENT, write_course, write_notebook

SUITE_WITH_ZOO = '''import pytest
import transformers
from autograder.grading import zoo
from my_references import reference  # a module of the suite itself

pytestmark = pytest.mark.forbidden("bitsandbytes::int8_linear", "torch.nn.functional.scaled_dot_product_attention")
'''


def test_a_trivial_assignment_preloads_neither_transformers_nor_the_zoo(make_course):
    assignment = load_course(make_course()).get(ASSIGNMENT)
    assert warm.modules_for(assignment, warm.WORKER_BASE) == [*warm.WORKER_BASE, warm.NUMERICS, warm.PAGES]


def test_what_the_suite_imports_and_forbids_is_preloaded_but_not_its_own_modules(make_course, monkeypatch):
    root = make_course(grader_tests={"test_q.py": SUITE_WITH_ZOO, "my_references.py": "def reference(): pass\n"})
    assignment = load_course(root).get(ASSIGNMENT)
    monkeypatch.syspath_prepend(str(assignment.tests_dir))  # pytest puts it there: still never preloaded
    monkeypatch.setattr(warm, "nvidia_driver_present", lambda: False)
    assert warm.modules_for(assignment, warm.SANDBOX_BASE) == [
        *warm.SANDBOX_BASE, "bitsandbytes", "pytest", "transformers", warm.NUMERICS, warm.ZOO, warm.PAGES]
    monkeypatch.setattr(warm, "nvidia_driver_present", lambda: True)  # bitsandbytes initialises CUDA
    assert warm.modules_for(assignment, warm.SANDBOX_BASE) == [
        *warm.SANDBOX_BASE, "pytest", "transformers", warm.NUMERICS, warm.ZOO, warm.PAGES]


def test_a_module_of_the_course_folder_is_never_preloaded(make_course, cells, monkeypatch):
    root = make_course([cells.code("import course_helpers\nimport torch")])
    (root / "course_helpers.py").write_text("SECRET = 42\n")
    monkeypatch.syspath_prepend(str(root))
    assert "course_helpers" not in warm.modules_for(load_course(root).get(ASSIGNMENT), warm.WORKER_BASE)


SIBLING_SUITE = '''import os
import pytest


@pytest.mark.points(1)
def test_the_sandbox_is_a_sibling_of_this_worker(submission):
    assert submission.parent() == os.getppid() != os.getpid()
'''


def test_sandboxes_fork_from_the_batchs_forkserver_not_from_the_worker(tmp_path):
    """The worker holds reference values; its sandboxes are its siblings, children of the forkserver."""
    root = write_course(tmp_path, "import os", {"test_parent.py": SIBLING_SUITE}, points=1)
    code = "import os\n\ndef parent():\n    return os.getppid()\n"
    notebook = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(code)])
    with Gradebook.open(tmp_path / "gradebook.db") as gradebook:
        graded, _, failures = grade_batch(load_course(root).get(ASSIGNMENT), {"team": notebook}, gradebook,
                                          jobs=1, isolate=False)  # with walls, getppid() is 0 in the PID namespace
        assert graded == ["team"] and not failures
        [result] = gradebook.get(ASSIGNMENT, "team").results
    assert result.status == "passed", result.message


def test_a_batch_of_another_assignment_gets_a_forkserver_preloaded_for_it(make_course, tmp_path):
    """verify and mutants grade one batch per assignment in one process: each gets its own preload."""
    import multiprocessing.forkserver

    server = multiprocessing.forkserver._forkserver
    trivial = load_course(make_course()).get(ASSIGNMENT)
    (tmp_path / "zoo").mkdir()
    suite = {"test_q.py": SUITE_WITH_ZOO.replace("from my_references import reference", "")}
    with_zoo = load_course(write_course(tmp_path / "zoo", "import torch", suite, points=1)).get(ASSIGNMENT)
    warm.start(trivial)
    first = server._forkserver_pid
    warm.start(trivial)
    assert server._forkserver_pid == first  # the same assignment keeps its forkserver
    warm.start(with_zoo)
    assert server._forkserver_pid != first and warm.ZOO in server._preload_modules


ASK_FORKSERVER = '''
def ask_forkserver():
    import multiprocessing.forkserver, socket
    address = multiprocessing.forkserver._forkserver._forkserver_address
    if not address:
        return "no address"
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(address)
    except OSError:
        return "unreachable"
    return "connected"
'''
UNREACHABLE_SUITE = '''import pytest


@pytest.mark.points(1)
def test_the_forkserver_is_out_of_reach(submission):
    assert submission.ask_forkserver() in ("unreachable", "no address")
'''


def test_a_sandbox_cannot_ask_the_batchs_forkserver_for_a_process_outside_its_walls(tmp_path):
    """The forkserver has no walls: a sandbox that reached its socket could have it fork an unconfined
    process. It knows the address (inherited), but the socket lives in the grader's /tmp, not in the
    sandbox's private one, and abstract sockets stay in the grader's network namespace."""
    root = write_course(tmp_path, ASK_FORKSERVER, {"test_reach.py": UNREACHABLE_SUITE}, points=1)
    notebook = write_notebook(tmp_path / "team.ipynb", [nbformat.v4.new_code_cell(ASK_FORKSERVER)])
    with Gradebook.open(tmp_path / "gradebook.db") as gradebook:
        graded, _, failures = grade_batch(load_course(root).get(ASSIGNMENT), {"team": notebook}, gradebook, jobs=1)
        assert graded == ["team"] and not failures
        [result] = gradebook.get(ASSIGNMENT, "team").results
    assert result.status == "passed", result.message


def test_apis_forbidden_through_a_constant_of_the_suite_are_preloaded(make_course, monkeypatch):
    """Suites name their forbidden APIs once, in a references module (`forbidden(*FORBIDDEN)`); their
    libraries must still be preloaded, or every sandbox imports them again (bitsandbytes: 0.8 s)."""
    root = make_course(grader_tests={
        "quant_references.py": 'FORBIDDEN = (\n    "bitsandbytes.functional.quantize_4bit",\n)\n',
        "test_q.py": "import pytest\nfrom quant_references import FORBIDDEN\n\n"
                     "pytestmark = pytest.mark.forbidden(*FORBIDDEN)\n"})
    monkeypatch.setattr(warm, "nvidia_driver_present", lambda: False)
    assert "bitsandbytes" in warm.modules_for(load_course(root).get(ASSIGNMENT), warm.WORKER_BASE)


def test_packages_installed_in_a_virtual_environment_inside_the_course_folder_are_preloaded(
        make_course, cells, monkeypatch):
    """`make` builds .venv inside the course folder: its packages are installed code, not course files."""
    root = make_course([cells.code("import installed_pkg\nimport course_helpers")])
    site = root / ".venv" / "lib" / "site-packages"
    (site / "installed_pkg").mkdir(parents=True)
    (site / "installed_pkg" / "__init__.py").write_text("")
    (root / "course_helpers.py").write_text("SECRET = 42\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(warm.sysconfig, "get_paths", lambda: {key: str(site) for key in
                                                               ("purelib", "platlib", "stdlib", "platstdlib")})
    preload = warm.modules_for(load_course(root).get(ASSIGNMENT), warm.WORKER_BASE)
    assert "installed_pkg" in preload and "course_helpers" not in preload


THREADS_SUITE = '''import os
import pytest
import torch


@pytest.mark.points(1)
def test_threads(submission):
    assert torch.get_num_threads() == max(1, os.cpu_count() // 2), torch.get_num_threads()
'''


def test_two_workers_share_the_cores_instead_of_each_taking_them_all(tmp_path):
    """Each worker computes reference values with torch: two workers with a thread per core each
    wait on each other's spinning threads (a batch of 02 took 29 s instead of 10 s)."""
    root = write_course(tmp_path, "x = 1", {"test_threads.py": THREADS_SUITE}, points=1)
    notebooks = {f"team{n}": write_notebook(tmp_path / f"team{n}.ipynb", [nbformat.v4.new_code_cell("x = 1")])
                 for n in range(2)}
    with Gradebook.open(tmp_path / "gradebook.db") as gradebook:
        graded, _, failures = grade_batch(load_course(root).get(ASSIGNMENT), notebooks, gradebook, jobs=2)
        assert sorted(graded) == ["team0", "team1"] and not failures
        for team in notebooks:
            [result] = gradebook.get(ASSIGNMENT, team).results
            assert result.status == "passed", result.message


def test_grading_processes_never_import_the_iri_grammar_library():
    """nbformat -> jsonschema imports rfc3987_syntax, 1.3 s of grammar building that no notebook
    schema uses; the grader's processes go without it and still validate notebooks."""
    import subprocess
    import sys

    probe = ("import sys, autograder.grading.extraction, nbformat\n"
             "assert sys.modules.get('rfc3987_syntax') is None, 'imported'\n"
             "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x')])\n"
             "nb.cells[0]['source'] = 5\n"
             "try:\n    nbformat.validate(nb)\nexcept nbformat.ValidationError:\n    print('rejected')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "rejected", done.stderr


READS_ITS_MEMORY = '''import ctypes, os


def environment_strings():
    """Everything between the stack's end and the top of its mapping, where the process's environment
    strings stay whatever os.environ says (write() reports unmapped memory instead of crashing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    address = ctypes.c_void_p.in_dll(libc, "__libc_stack_end").value
    r, w = os.pipe()
    found = b""
    while (n := libc.write(w, ctypes.c_void_p(address), 4096 - address % 4096)) > 0:
        found += os.read(r, n)
        address += n
    return found.decode(errors="replace")
'''
MEMORY_SUITE = '''import pytest


@pytest.mark.points(1)
def test_no_secret_in_memory(submission):
    seen = submission.environment_strings()
    assert "PATH=" in seen, "the probe read no environment at all"
    assert "c4n4ry" not in seen and "hf_s3cret" not in seen, "the grader's environment reached the sandbox"
'''


@pytest.mark.parametrize("how", ["grade", "pytest --submission"])
def test_the_tas_environment_never_reaches_a_sandboxs_memory(tmp_path, how):
    """A process's environment strings stay in its memory, and sandboxes are forked from a forkserver:
    it starts with only what Python, torch and CUDA need, never a token or a password."""
    import subprocess
    import sys

    root = write_course(tmp_path, READS_ITS_MEMORY, {"test_memory.py": MEMORY_SUITE}, points=1)
    notebook = write_notebook(tmp_path / "batch" / "team.ipynb", [nbformat.v4.new_code_cell(READS_ITS_MEMORY)])
    write_notebook(tmp_path / "batch" / "other.ipynb", [nbformat.v4.new_code_cell(READS_ITS_MEMORY)])
    env = os.environ | {"GRADER_CANARY": "c4n4ry", "HF_TOKEN": "hf_s3cret", "AUTOGRADER_COURSE_ROOT": str(root)}
    if how == "grade":
        command = [sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT, str(tmp_path / "batch"),
                   "--gradebook", str(tmp_path / "g.db")]
    else:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "autograder.grading.oracle", "--submission", str(notebook),
                   "-p", "no:cacheprovider", str(root / "grader_tests" / ASSIGNMENT)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if how == "grade":
        assert done.returncode == 0, done.stderr
        with Gradebook.open(tmp_path / "g.db") as gradebook:
            [result] = gradebook.get(ASSIGNMENT, "team").results
        assert result.status == "passed", result.message
    else:
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def _huge_pages_of(pid: int | str = "self") -> int:
    """KiB of a process's anonymous memory in transparent huge pages."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages:"))


@pytest.fixture
def private_region():
    """8 MiB of private anonymous memory, written to (as a heap is), and its address."""
    import ctypes
    import mmap

    region = mmap.mmap(-1, 8 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.write(b"x" * len(region))
    yield region, ctypes.addressof(ctypes.c_char.from_buffer(region))
    region.close()


@pytest.fixture
def collapsing_kernel(private_region):
    """Skips unless this kernel collapses memory into huge pages on request (Linux 6.1 or later)."""
    import ctypes

    region, address = private_region
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    aligned = -(-address // pages.HUGE_PAGE) * pages.HUGE_PAGE
    if libc.madvise(aligned, pages.HUGE_PAGE, pages.MADV_COLLAPSE) != 0:
        pytest.skip(f"this kernel does not collapse memory into huge pages: {os.strerror(ctypes.get_errno())}")
    return libc.madvise


def test_the_ranges_to_collapse_are_the_aligned_parts_of_private_anonymous_memory(private_region, tmp_path):
    import mmap

    region, address = private_region
    ranges = pages.anonymous_ranges()
    assert all(begin % pages.HUGE_PAGE == 0 and end % pages.HUGE_PAGE == 0 and end > begin for begin, end in ranges)
    aligned = (-(-address // pages.HUGE_PAGE) * pages.HUGE_PAGE, (address + len(region)) // pages.HUGE_PAGE
               * pages.HUGE_PAGE)
    assert any(begin <= aligned[0] and aligned[1] <= end for begin, end in ranges)
    (tmp_path / "file").write_bytes(b"y" * 8 * 2**20)
    with open(tmp_path / "file", "r+b") as f, mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE) as mapped:
        import ctypes

        file_address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        assert not any(begin <= file_address + pages.HUGE_PAGE < end for begin, end in pages.anonymous_ranges())


def test_collapse_puts_private_memory_in_huge_pages(private_region, collapsing_kernel):
    before = _huge_pages_of()
    assert pages.collapse(collapsing_kernel) >= 2
    assert _huge_pages_of() >= before + 2 * pages.HUGE_PAGE // 1024


def test_the_batchs_forkserver_holds_its_heap_in_huge_pages(make_course, collapsing_kernel):
    """Every sandbox is two forks of the forkserver: with torch's heap in 4 KiB pages each costs
    page-table copies and frees that grade a batch of the trivial assignment about 18 % slower."""
    import multiprocessing.forkserver
    import time

    assignment = load_course(make_course()).get(ASSIGNMENT)
    assert warm.modules_for(assignment, warm.WORKER_BASE)[-1] == warm.PAGES  # after everything it preloads
    warm.start(assignment)
    forkserver = multiprocessing.forkserver._forkserver._forkserver_pid
    deadline = time.monotonic() + 30
    while _huge_pages_of(forkserver) < 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _huge_pages_of(forkserver) >= 64 * 1024  # torch's heap is about 150 MB


def test_without_proc_the_huge_page_step_collapses_nothing_and_raises_nothing(monkeypatch):
    """Its thread would otherwise print a traceback onto the TA's terminal."""
    def unreadable(*args, **kwargs):
        raise PermissionError("/proc/self/maps")

    monkeypatch.setattr(pages, "open", unreadable, raising=False)
    assert pages.anonymous_ranges() == [] and pages.collapse(lambda *args: 0) == 0
