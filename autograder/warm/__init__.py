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
from pathlib import Path

from autograder.config import Assignment
from autograder.devices import nvidia_driver_present
from autograder.isolation import exit_with

WORKER_BASE = ["torch", "pytest", "autograder.oracle"]
SANDBOX_BASE = ["torch", "autograder.sandbox"]
NUMERICS, ZOO = "autograder.warm.numerics", "autograder.warm.zoo"
# On a GPU runner only what is known not to initialise CUDA on import (bitsandbytes does): a CUDA
# context does not survive a fork, so no process forked from the forkserver could use the GPU.
CUDA_SAFE = {"torch", "transformers", "tokenizers", "pytest"}


def _imports(source: str) -> tuple[set[str], set[str], bool]:
    """Top-level packages `source` imports, root packages of the APIs it forbids, and whether it uses the zoo."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set(), False
    modules, forbidden, zoo = set(), set(), False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
            zoo |= any(alias.name.startswith("autograder.zoo") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
            zoo |= node.module.startswith("autograder.zoo") or (
                node.module == "autograder" and any(alias.name == "zoo" for alias in node.names))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "forbidden":
            forbidden.update(re.split(r"[.:]", arg.value)[0] for arg in node.args
                             if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return modules, forbidden, zoo


def _notebook_code(path: Path) -> str:
    """The code cells of a notebook, shell escapes and magics left out (they are not Python)."""
    try:
        cells = json.loads(path.read_bytes()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ""
    sources = ("".join(c.get("source", "")) for c in cells if isinstance(c, dict) and c.get("cell_type") == "code")
    return "\n".join(line for source in sources for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _installed_outside(name: str, root: Path) -> bool:
    """Importable, and not from the course folder: the forkserver must never load course files."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    locations = [spec.origin] if spec and spec.origin else list(spec.submodule_search_locations or []) if spec else []
    return bool(locations) and not any(Path(p).resolve().is_relative_to(root.resolve()) for p in locations)


def modules_for(assignment: Assignment, base: list[str], extra=()) -> list[str]:
    """What a forkserver preloads for this assignment: `base`, then what its solution and hidden suite
    import and the roots of the APIs it forbids (with `extra`, those found at collection)."""
    modules, zoo = set(extra), False
    for text in [_notebook_code(p) for p in assignment.source_notebooks()] + [
            p.read_text(errors="replace") for p in sorted(assignment.tests_dir.rglob("*.py"))]:
        imported, forbidden, uses_zoo = _imports(text)
        modules |= imported | forbidden
        zoo |= uses_zoo
    extra = sorted(name for name in modules - set(base) - {"autograder", "__future__"}
                   if _installed_outside(name, assignment.root))
    if nvidia_driver_present():
        extra = [name for name in extra if name in CUDA_SAFE]
    return [*base, *extra, NUMERICS, *([ZOO] if zoo else [])]


def start(assignment: Assignment):
    """Start the batch's forkserver in the `grade` process; returns its context and its address."""
    ctx = multiprocessing.get_context("forkserver")
    server, preload = multiprocessing.forkserver._forkserver, modules_for(assignment, WORKER_BASE)
    if server._forkserver_pid is not None and server._preload_modules != preload:
        # One preloaded for another assignment (verify, mutants: one batch per assignment) is let go as
        # multiprocessing lets go of a dead one: it ends once its last child has ended.
        os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
    ctx.set_forkserver_preload(preload)
    multiprocessing.forkserver.ensure_running()
    return ctx, (server._forkserver_address, getattr(server, "_forkserver_authkey", None))


def worker_init(owner: int, address) -> None:
    """Pool initializer: end with the `grade` process, and start sandboxes from the batch's forkserver
    instead of a forkserver of this worker's own (a process forked from the forkserver knows the
    pipe that keeps it alive, not where it listens)."""
    exit_with(owner)
    server = multiprocessing.forkserver._forkserver
    server._forkserver_address, authkey = address
    if authkey is not None:
        server._forkserver_authkey = authkey
    server.ensure_running = multiprocessing.resource_tracker.ensure_running  # the `grade` process runs it
