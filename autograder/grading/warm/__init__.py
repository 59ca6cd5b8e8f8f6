"""The one forkserver a batch forks from: its grading workers and every sandbox alike.

It imports once what the assignment needs (torch, pytest, the grader, the modules the solution
notebook and the hidden suite import, the libraries whose APIs the suite forbids) and pays first-use
costs (`warm.numerics`, and `warm.zoo` when the suite uses the zoo), then only forks. It never
collects a test, computes a reference value or loads a submission, so a sandbox forked from it
inherits none, exactly as from a forkserver of its own; workers reach it through its address.

This package's top level imports no torch: the `grade` command plans the forkserver with it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import sysconfig
import time
from pathlib import Path

from autograder.course.config import Assignment
from autograder.grading.devices import nvidia_driver_present
from autograder.grading.isolation import exit_with

WORKER_BASE = ["torch", "pytest", "autograder.grading.oracle"]
SANDBOX_BASE = ["torch", "autograder.grading.sandbox"]
NUMERICS, ZOO, PAGES = "autograder.grading.warm.numerics", "autograder.grading.warm.zoo", "autograder.grading.warm.pages"
# On a GPU runner only what is known not to initialise CUDA on import (bitsandbytes does): a CUDA
# context does not survive a fork, so no process forked from the forkserver could use the GPU.
CUDA_SAFE = {"torch", "transformers", "tokenizers", "pytest"}
ZOO_MODULES = ("autograder.zoo", "autograder.grading.zoo")  # its public path and its home


class _Uses:
    """What sources import (top-level packages), the root packages of the APIs they forbid, and whether
    they use the zoo. A forbidden API may be named through a constant (`forbidden(*FORBIDDEN)`, the
    tuple written in a references module): names are resolved across all the sources read."""

    def __init__(self):
        self.modules: set[str] = set()
        self.forbidden: set[str] = set()
        self.zoo = False
        self._constants: dict[str, list[str]] = {}  # module-level name -> the strings it is bound to
        self._forbidden_names: set[str] = set()

    def read(self, source: str) -> None:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List)):
                strings = [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                for target in (t for t in node.targets if isinstance(t, ast.Name)):
                    self._constants.setdefault(target.id, []).extend(strings)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self.modules.update(alias.name.split(".")[0] for alias in node.names)
                self.zoo |= any(alias.name.startswith(ZOO_MODULES) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self.modules.add(node.module.split(".")[0])
                self.zoo |= node.module.startswith(ZOO_MODULES) or (
                    node.module in ("autograder", "autograder.grading") and any(a.name == "zoo" for a in node.names))
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "forbidden":
                for arg in node.args:
                    arg = arg.value if isinstance(arg, ast.Starred) else arg
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        self.forbidden.add(root_package(arg.value))
                    elif isinstance(arg, ast.Name):
                        self._forbidden_names.add(arg.id)

    def forbidden_roots(self) -> set[str]:
        named = (api for name in self._forbidden_names for api in self._constants.get(name, ()))
        return self.forbidden | {root_package(api) for api in named}


def root_package(api: str) -> str:
    """The package a forbidden API lives in (`torch.nn.functional.x`, `aten::y` -> `torch`, `aten`)."""
    return re.split(r"[.:]", api)[0]


def _notebook_code(path: Path) -> str:
    """The code cells of a notebook, shell escapes and magics left out (they are not Python)."""
    try:
        cells = json.loads(path.read_bytes()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ""
    sources = ("".join(c.get("source", "")) for c in cells if isinstance(c, dict) and c.get("cell_type") == "code")
    return "\n".join(line for source in sources for line in source.splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def _installed(name: str, root: Path) -> bool:
    """Importable from the interpreter's installed packages or standard library, or from anywhere but
    the course folder: the forkserver must never load course files. (A virtual environment inside the
    course folder, as `make` builds it, holds installed packages, not course files.)"""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    locations = [spec.origin] if spec and spec.origin else list(spec.submodule_search_locations or []) if spec else []
    installs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return bool(locations) and all(
        any(path.is_relative_to(install) for install in installs) or not path.is_relative_to(root.resolve())
        for path in (Path(p).resolve() for p in locations))


def modules_for(assignment: Assignment, base: list[str], extra=()) -> list[str]:
    """What a forkserver preloads for this assignment: `base`, then what its solution and hidden suite
    import and the roots of the APIs it forbids (with `extra`, those found at collection)."""
    uses = _Uses()
    for text in [_notebook_code(p) for p in assignment.source_notebooks()] + [
            p.read_text(errors="replace") for p in sorted(assignment.tests_dir.rglob("*.py"))]:
        uses.read(text)
    modules, zoo = set(extra) | uses.modules | uses.forbidden_roots(), uses.zoo
    extra = sorted(name for name in modules - set(base) - {"autograder", "__future__"}
                   if _installed(name, assignment.root))
    if nvidia_driver_present():
        extra = [name for name in extra if name in CUDA_SAFE]
    return [*base, *extra, NUMERICS, *([ZOO] if zoo else []), PAGES]


# What a forkserver's environment keeps of the grader's: what Python, torch, CUDA and the libraries
# need to run. A process's environment stays in its memory (clearing os.environ does not erase the
# strings), and sandboxes are forked from the forkserver: a submission reading its own memory would
# find the TA's tokens and passwords. Names that look like secrets go even when allowed.
_ENVIRONMENT_KEPT = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH",
                     "PYTHONHOME", "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}
_ENVIRONMENT_KEPT_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "TORCH_", "PYTORCH_",
                              "BNB_", "CONDA_", "HF_", "TRANSFORMERS_", "AUTOGRADER_")
_SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|KEY", re.IGNORECASE)


def ensure_forkserver() -> None:
    """Start this process's forkserver if it is not running, with only `_ENVIRONMENT_KEPT` of the
    environment (it inherits the environment). In a grading worker the batch's forkserver runs
    already, and the instance's method (patched by `worker_init`) knows it."""
    saved = dict(os.environ)
    kept = {name: value for name, value in saved.items()
            if (name in _ENVIRONMENT_KEPT or name.startswith(_ENVIRONMENT_KEPT_PREFIXES))
            and not _SECRET_LOOKING.search(name)}
    os.environ.clear()
    os.environ.update(kept)
    try:
        multiprocessing.forkserver._forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start(assignment: Assignment):
    """Start the batch's forkserver in the `grade` process; returns its context, its address and when
    it was asked for (a worker's first submission reports how long the forkserver took to serve it)."""
    requested_at = time.time()
    ctx = multiprocessing.get_context("forkserver")
    server, preload = multiprocessing.forkserver._forkserver, modules_for(assignment, WORKER_BASE)
    if server._forkserver_pid is not None and server._preload_modules != preload:
        # One preloaded for another assignment (verify, mutants: one batch per assignment) is let go as
        # multiprocessing lets go of a dead one: it ends once its last child has ended.
        os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
    ctx.set_forkserver_preload(preload)
    ensure_forkserver()
    return ctx, (server._forkserver_address, getattr(server, "_forkserver_authkey", None)), requested_at


def pool(forkserver, workers: int):
    """A pool of `workers` grading processes forked from the batch's forkserver (`start`'s result)."""
    from concurrent.futures import ProcessPoolExecutor

    ctx, address, requested_at = forkserver
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                               initargs=(os.getpid(), address, requested_at, threads))


# In a pool worker: (when the batch asked for the forkserver, when this worker was up) until its first
# submission takes them for its profile.
worker_started: tuple[float, float] | None = None


def worker_init(owner: int, address, requested_at: float, threads: int) -> None:
    """Pool initializer: end with the `grade` process, and start sandboxes from the batch's forkserver
    instead of a forkserver of this worker's own (a process forked from the forkserver knows the
    pipe that keeps it alive, not where it listens). The workers share the cores: each computes its
    reference values with its share of torch's threads (two workers with a thread per core each made
    every reference computation wait on the other's spinning threads)."""
    import torch

    global worker_started
    worker_started = (requested_at, time.time())
    torch.set_num_threads(threads)
    exit_with(owner)
    server = multiprocessing.forkserver._forkserver
    server._forkserver_address, authkey = address
    if authkey is not None:
        server._forkserver_authkey = authkey
    server.ensure_running = multiprocessing.resource_tracker.ensure_running  # the `grade` process runs it
