"""`autograder validate NOTEBOOK`: what a student learns before handing in, on their own machine.

It reads the notebook with the grader's own extraction and reports, in plain words, what would cost
points for a reason other than a wrong result: graded names missing or with another signature than the
release's, code the graded functions rely on that does not run when grading, imports the grader cannot
satisfy, edited locked or test cells (nbgrader checksums) and forbidden APIs. It also runs the public
checks, in a child process with a timeout, so a crash or an endless loop is a message.

What the release promises (assignment, extraction mode, graded interface, forbidden APIs) is written
into the release notebook's metadata by `autograder release`; a copy of the release notebook carries
it, so validation needs neither the course config nor the hidden suites.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import fnmatch
import functools
import hashlib
import importlib.metadata
import io
import multiprocessing
import os
import symtable
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4.rwbase import rejoin_lines
from nbgrader.utils import compute_checksum, is_grade, is_locked, is_solution

from autograder.grading.extraction import (WHAT_RUNS, Extracted, bound_names, dotted_name, extract, imported_names,
                                           read_notebook_json)
from autograder.grading.handins import SubmissionFormatError, shown

METADATA_KEY = "autograder"  # notebook metadata written by the release compiler
CHECKS_FILE = "public_checks.py"
DEFAULT_TIMEOUT_S = 60.0
# Loading the notebook imports torch and transformers in a fresh process: slow on a laptop's first run.
LOAD_TIMEOUT_S = 180.0
PACK = "autograder pack NOTEBOOK --team TEAM"
LOADING = "loading your notebook"


class ValidateError(Exception):
    """Validation cannot start (no notebook, no release to compare with); one line for the student."""


# --------------------------------------------------------------------------------------------------
# The graded interface, as the release compiler records it


def signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """Parameters as the caller sees them: names, kinds and defaults; annotations do not matter."""
    args = copy.deepcopy(node.args)
    for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if arg is not None:
            arg.annotation = None
    return f"({ast.unparse(args)})"


def interface(source: str) -> dict[str, str]:
    """Each top-level function of an answer cell with its signature; a class as "class" and each of
    its methods as `Class.method`."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = signature(node)
        elif isinstance(node, ast.ClassDef):
            found[node.name] = "class"
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = signature(item)
    return found


def _is_fixed(cell) -> bool:
    """A cell students must leave as released: locked, or a test cell (nbgrader checksums these)."""
    return is_locked(cell) or (is_grade(cell) and not is_solution(cell))


def _statement_key(node: ast.stmt) -> str:
    """A statement by what it says, wherever it stands (positions are not part of `ast.dump`)."""
    return hashlib.sha256(ast.dump(node).encode()).hexdigest()[:16]


def _given_statements(nb) -> list[str]:
    """Keys of the top-level statements of the release's own code cells (demos that load real models,
    plots): validation does not list them among the student's code that does not run when grading."""
    keys = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and not is_solution(cell):
            try:
                keys.update(_statement_key(node) for node in ast.parse(cell.source).body)
            except SyntaxError:  # IPython syntax: such a cell is the student's to read, not graded
                continue
    return sorted(keys)


def release_metadata(nb, assignment_id: str, extraction: str, forbidden: dict[str, list[str]]) -> dict:
    """The block of notebook metadata validation reads. Forbidden APIs are one string per task, so no
    line of the release repeats a line of the hidden suite (the leak check would refuse it)."""
    graded = {cell.metadata["nbgrader"]["grade_id"]: interface(cell.source)
              for cell in nb.cells if cell.cell_type == "code" and is_solution(cell)}
    locked = [cell.metadata["nbgrader"]["grade_id"] for cell in nb.cells if _is_fixed(cell)]
    return {"assignment": assignment_id, "extraction": extraction, "graded": graded, "locked": locked,
            "forbidden": {task: ", ".join(apis) for task, apis in forbidden.items() if apis and task in graded},
            "given": _given_statements(nb)}


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    notebook: str
    assignment: str
    problems: list[str] = field(default_factory=list)  # would cost points for a reason other than results
    notes: list[str] = field(default_factory=list)  # worth knowing, costs nothing by itself
    not_run: list[str] = field(default_factory=list)  # top-level statements of the student's the grader skips
    given_not_run: int = 0  # ... and of the release's own demo cells, which are only counted
    checks: list[tuple[str, bool, str]] | None = None  # public checks (None: not run)
    checks_not_run: str = ""  # why they were not run, where that was not the caller's choice

    @property
    def exit_status(self) -> int:
        return 1 if self.problems else 0

    def format(self) -> str:
        lines = [f"Validating {self.notebook} ({self.assignment}) as the grader reads it"]
        if self.not_run:
            lines += ["", f"Top-level code that does not run when grading ({WHAT_RUNS}):"]
            lines += [f"  {line}" for line in self.not_run]
        if self.given_not_run:
            lines += ["", f"The release's own demo code ({self.given_not_run} top-level statements) does not run when "
                          "grading either; that is expected."]
        if self.notes:
            lines += ["", "Notes:"] + [f"  - {note}" for note in self.notes]
        if self.checks_not_run:
            lines += ["", f"Public checks: NOT RUN ({self.checks_not_run})"]
        if self.checks is not None:
            passed = sum(ok for _, ok, _ in self.checks)
            lines += ["", f"Public checks: {passed}/{len(self.checks)} passed (hints only; the hidden tests grade)"]
            lines += [f"  {'✓' if ok else '✗'} {name}" + ("" if ok else f": {message}")
                      for name, ok, message in self.checks]
        if self.problems:
            lines += ["", f"{len(self.problems)} problem(s) that cost points whatever your results:"]
            lines += [f"  ✗ {problem}" for problem in self.problems]
            lines += ["", "Fix them, save the notebook and validate again."]
        else:
            lines += ["", f"Nothing found that costs points beyond wrong results. Hand in with `{PACK}`."]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Reading the notebook and what it is compared with


def _read_nb(path: Path):
    """The notebook read exactly as the grader reads it, so its messages are the grader's."""
    if not path.exists():
        raise ValidateError(f"{shown(path)}: no such file")
    try:
        nb = read_notebook_json(path)
    except SubmissionFormatError as exc:
        raise ValidateError(str(exc)) from None
    try:
        return rejoin_lines(nbformat.from_dict(nb))  # source saved as a list of lines, as nbformat.read does
    except Exception:  # noqa: BLE001 - cells that are not JSON objects
        raise ValidateError(f"{shown(path.name)} is not a notebook Jupyter can open: its cells are not all "
                            "JSON objects; open it in Jupyter and save it again") from None


def _reference(nb, notebook: Path, release: Path | None) -> tuple[dict, Path | None]:
    """The release's metadata block and the release notebook it came from (None: the notebook's own)."""
    if release is not None:
        if release.is_dir():
            found = sorted(release.glob("*.ipynb"))
            if len(found) != 1:
                raise ValidateError(f"{shown(release)}: expected one release notebook there, found {len(found)}")
            release = found[0]
        meta = _read_nb(release).metadata.get(METADATA_KEY)
        if not meta:
            raise ValidateError(f"{shown(release)} is not a release notebook (no `{METADATA_KEY}` metadata); "
                                "give the notebook from release/<assignment>/")
        return meta, release
    meta = nb.metadata.get(METADATA_KEY)
    if not meta:
        raise ValidateError(f"{shown(notebook)} does not say which assignment it is (it was not started from a "
                            "release notebook): pass --release release/<assignment>/<assignment>.ipynb")
    if not (isinstance(meta, dict) and isinstance(meta.get("graded"), dict) and isinstance(meta.get("assignment"), str)
            and meta.get("extraction") in ("definitions", "cells")):
        raise ValidateError(f"{shown(notebook)}: its `{METADATA_KEY}` metadata was changed; pass --release "
                            "release/<assignment>/<assignment>.ipynb")
    return meta, None


# --------------------------------------------------------------------------------------------------
# Static findings


@dataclass(frozen=True)
class _Statement:
    cell: int
    node: ast.stmt
    source: str

    @property
    def first_line(self) -> str:
        line = self.source.split("\n")[self.node.lineno - 1].strip()
        return line if len(line) <= 70 else line[:67] + "..."

    @property
    def where(self) -> str:
        return f"cell {self.cell}, line {self.node.lineno}"


def _statements(code: Extracted) -> list[_Statement]:
    return [_Statement(cell.number, ast.parse(cell.source).body[i], cell.source) for cell in code.cells
            for i in cell.keep]


def _is_stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The release's stub: a docstring at most, then `raise NotImplementedError(...)`."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _check_interface(meta: dict, defs: dict[str, _Statement], report: Report) -> None:
    for task, names in meta["graded"].items():
        for name, wanted in names.items():
            owner, _, method = name.partition(".")
            of_task = "" if owner == task else f" (task {task})"
            found = defs.get(owner)
            if found is None:
                if not method:
                    report.problems.append(f"`{name}`{of_task} is not defined where the grader sees it: "
                                           f"its tests score zero")
                continue
            node = found.node
            if method:
                if not isinstance(node, ast.ClassDef):
                    continue
                node = next((n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                             and n.name == method), None)
                if node is None:
                    report.problems.append(f"class `{owner}`{of_task} has no method `{method}`; the release "
                                           f"has `def {method}{wanted}`")
                    continue
            elif (wanted == "class") != isinstance(node, ast.ClassDef):
                report.problems.append(f"`{name}`{of_task} must be a {'class' if wanted == 'class' else 'function'}"
                                       f" as in the release ({found.where})")
                continue
            if wanted == "class":
                continue
            mine = signature(node)
            if mine != wanted:
                report.problems.append(f"`{name}`{of_task} takes {mine} but the release says {wanted} "
                                       f"({found.where}): the tests call it as the release says")
            elif _is_stub(node):
                report.problems.append(f"`{name}`{of_task} is not implemented yet (it still raises "
                                       "NotImplementedError)")


def _globals_used(statement: _Statement) -> set[str]:
    """Global names a definition reads: when it is defined (defaults, decorators, base classes) and when
    it runs (its own body, its methods' and its inner functions')."""
    table = symtable.symtable(ast.unparse(statement.node), "<cell>", "exec")
    names = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    todo = list(table.get_children())
    while todo:
        scope = todo.pop()
        todo += scope.get_children()
        names.update(s.get_name() for s in scope.get_symbols()
                     if s.is_referenced() and (s.is_global() or (scope.get_type() == "class" and not s.is_assigned())))
    return names


def _bound_anywhere(node: ast.stmt) -> set[str]:
    """Names a top-level statement that is not run would have set (loop targets, `with ... as`, imports)."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
    return names


@functools.cache
def _grader_modules() -> frozenset[str] | None:
    """Top-level modules the grader can import: the standard library and the packages the autograder
    depends on, with theirs (None when the autograder is not installed as a package here)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = ["autograder"], set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            if name == "autograder":
                return None
            continue
        seen.add(name)
        for requirement in map(Requirement, requires):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    installed = {module for module, dists in importlib.metadata.packages_distributions().items()
                 if any(canonicalize_name(d) in seen for d in dists)}
    return frozenset(installed | set(sys.stdlib_module_names) | {"autograder"})


def _failing_imports(kept: list[_Statement]) -> list[tuple[_Statement, str]] | None:
    """Kept imports that fail on the grader, with the module it lacks (None: not known here)."""
    available = _grader_modules()
    if available is None:
        return None
    failing = []
    for statement in kept:
        node = statement.node
        if isinstance(node, ast.ImportFrom) and node.level:
            failing.append((statement, "file next to the notebook (only the notebook is handed in)"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            failing += [(statement, f"`{top}`") for top in {m.split(".")[0] for m in modules} if top not in available]
    return failing


def _forbidden_uses(node: ast.AST, api: str, own: set[str], imported: dict[str, str]) -> list[int]:
    """Lines of `node` that reach `api` by name: `F.scaled_dot_product_attention`, `model.generate`,
    `getattr(x, "name")`, or an operator pattern (`aten::quantize_per_*`) through `torch.ops`. A static
    approximation of the grader's tripwires: a path through an imported module must end in the API's name
    in the API's library (`torch._C._nn.scaled_dot_product_attention` counts, `torch.matmul` is not
    `bitsandbytes.matmul`); on any other object (`model.generate`) the name alone counts."""
    if "::" in api:
        namespace, pattern = api.split("::", 1)
        return [n.lineno for n in ast.walk(node) if isinstance(n, ast.Attribute)
                and fnmatch.fnmatchcase(n.attr, pattern) and isinstance(n.value, ast.Attribute)
                and n.value.attr == namespace]
    parts = api.split(".")
    # A class's `__call__` or `forward` is reached by using the class, other methods by their name.
    cut = -1 if len(parts) > 1 and (parts[-1].startswith("__") or parts[-1] == "forward") else len(parts)
    name = parts[:cut][-1]

    def reaches(path: str) -> bool:  # the same name in the same library: the API or one of its bindings
        return path.rsplit(".", 1)[-1] == name and path.split(".")[0] == parts[0]

    lines = []
    for n in ast.walk(node):
        chain = dotted_name(n) if isinstance(n, ast.Attribute) and n.attr == name else None
        if ((chain and (reaches(".".join([imported[chain[0]], *chain[1:]])) if chain[0] in imported else True))
                or (isinstance(n, ast.Name) and (reaches(imported[n.id]) if n.id in imported
                                                 else n.id == name and name not in own))
                or (isinstance(n, ast.Constant) and n.value == name)
                or (isinstance(n, ast.ImportFrom) and any(reaches(f"{n.module}.{a.name}") for a in n.names))):
            lines.append(n.lineno)
    return lines


def _check_code(meta: dict, code: Extracted, everything: Extracted, report: Report) -> None:
    """Missing or changed graded names, state they rely on that is lost, failing imports, forbidden APIs."""
    kept = _statements(code)
    defs = {s.node.name: s for s in kept if isinstance(s.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    bound = set().union(*(bound_names(s.node) for s in kept)) if kept else set()
    kept_ids = {(s.cell, s.node.lineno) for s in kept}
    skipped = [s for s in _statements(everything) if (s.cell, s.node.lineno) not in kept_ids]
    given = set(meta.get("given", ()))
    report.not_run = [f"{s.where}: {s.first_line}" for s in skipped if _statement_key(s.node) not in given]
    report.given_not_run = len(skipped) - len(report.not_run)
    lost = {}
    for s in skipped:
        for name in _bound_anywhere(s.node):
            lost.setdefault(name, s)
    declared_global = {n for s in kept for sub in ast.walk(s.node) if isinstance(sub, ast.Global) for n in sub.names}

    _check_interface(meta, defs, report)
    failing = _failing_imports(kept)
    if failing is None:
        report.notes.append("imports were not checked: the autograder package is not installed here "
                            "(`pip install` the course package)")
    broken = {name: (s, why) for s, why in failing or () for name in bound_names(s.node)}

    # Graded definitions and the notebook's functions they use, with the tasks whose rules apply to them.
    owner = {name.partition(".")[0]: task for task, names in meta["graded"].items() for name in names}
    todo = list(owner.items())
    reached: dict[str, set[str]] = {}
    used_broken = set()
    while todo:
        name, task = todo.pop()
        if name not in defs or task in reached.get(name, ()):
            continue
        first_visit = name not in reached
        reached.setdefault(name, set()).add(task)
        for used in sorted(_globals_used(defs[name])):
            if used in defs:
                todo.append((used, task))
            elif not first_visit:
                continue
            elif used in broken:
                used_broken.add(used)
                s, why = broken[used]
                report.problems.append(f"`{name}` uses `{used}`, but `{s.first_line}` ({s.where}) fails when "
                                       f"grading: the grader has no {why}")
            elif used in bound or hasattr(builtins, used) or used in declared_global or "*" in bound:
                continue
            elif used in lost:
                s = lost[used]
                report.problems.append(f"`{name}` uses `{used}`, which {s.where} sets (`{s.first_line}`); that "
                                       f"line does not run when grading ({WHAT_RUNS}): create it inside the "
                                       "function, pass it as an argument or make it an UPPER_CASE constant")
            else:
                report.problems.append(f"`{name}` uses `{used}`, which the notebook never defines at the top level "
                                       "(NameError when graded)")
    for s, why in failing or ():
        if not bound_names(s.node) & used_broken:
            report.notes.append(f"{s.where}: `{s.first_line}` fails when grading (the grader has no {why}); no "
                                "graded function uses it, so this costs nothing")

    imported = imported_names(s.node for s in kept)
    forbidden = meta.get("forbidden", {})
    for name, tasks in sorted(reached.items()):
        by_api: dict[str, list[str]] = {}
        for task in sorted(tasks):
            for api in filter(None, (a.strip() for a in forbidden.get(task, "").split(","))):
                by_api.setdefault(api, []).append(task)
        for api, asking in by_api.items():
            lines = _forbidden_uses(defs[name].node, api, set(defs), imported)
            if lines:
                report.problems.append(f"`{name}` ({defs[name].where}) seems to use `{api}` (line {lines[0]} of the "
                                       f"cell), which the tests of {' and '.join(asking)} forbid (implement it "
                                       "yourself): such a call fails the tests that make it")


def _check_cells(nb, meta: dict, report: Report) -> None:
    """Locked and test cells must be as released (nbgrader's checksums), and none may be missing."""
    present = set()
    for number, cell in enumerate(nb.cells, start=1):
        grader_meta = cell.metadata.get("nbgrader", {})
        if not _is_fixed(cell) or "checksum" not in grader_meta:
            continue
        present.add(grader_meta.get("grade_id"))
        if compute_checksum(cell) != grader_meta["checksum"]:
            report.problems.append(f"cell {number} ({grader_meta.get('grade_id')}) is a locked or test cell and "
                                   "was edited: restore it from the release (nbgrader flags edited cells)")
    if not present:
        report.notes.append("this notebook has none of the release's nbgrader cells, so locked cells were not "
                            "checked; work in a copy of the release notebook")
        return
    missing = [grade_id for grade_id in meta.get("locked", []) if grade_id not in present]
    if missing:
        report.problems.append(f"locked or test cells were deleted: {', '.join(missing)}; copy them back from "
                               "the release notebook")


# --------------------------------------------------------------------------------------------------
# Public checks, in a child process


def _checks_child(conn, notebook: str, extraction: str, checks_dir: str, skip: list[str]) -> None:
    """Load the notebook as the grader does, then run each task's public checks; report over `conn`.
    What the student's code prints is dropped: only the verdicts matter here."""
    from autograder.student import checks
    from autograder.grading.sandbox import load_statements

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            namespace = {"__name__": "__main__"}
            load_statements(extract(Path(notebook), extraction), namespace)
            sys.path.insert(0, checks_dir)
            import public_checks  # noqa: F401 - registers the checks
        except Exception as exc:  # noqa: BLE001 - a broken public_checks.py is a message, not a traceback
            conn.send(("error", f"{CHECKS_FILE} could not be loaded: {type(exc).__name__}: {exc}"))
            return
        tasks = [task for task in checks.REGISTERED if task not in skip]
        conn.send(("tasks", tasks))
        for task in tasks:
            conn.send(("start", task))
            conn.send(("done", checks.run_checks(task, namespace)))
        conn.send(("end", None))  # before the process winds down (exiting after torch can take seconds)


def run_public_checks(notebook: Path, extraction: str, checks_dir: Path,
                      timeout: float = DEFAULT_TIMEOUT_S) -> list[tuple[str, bool, str]]:
    """(check, passed, message) rows. A task that does not finish within `timeout` seconds or ends the
    process is one failed row; the tasks after it run in a fresh process."""
    context = multiprocessing.get_context("spawn")  # nothing of this process (a Jupyter kernel) is inherited
    rows: list[tuple[str, bool, str]] = []
    skip: list[str] = []
    while True:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_checks_child, args=(sender, str(notebook), extraction, str(checks_dir), skip))
        process.start()
        sender.close()
        current = LOADING  # what the child is doing: loading, a task's name, or None between tasks
        try:
            while True:
                allowed = LOAD_TIMEOUT_S if current == LOADING else timeout
                if not receiver.poll(allowed):
                    rows.append((current, False, f"did not finish within {allowed:g} s (an endless loop?)"))
                    break
                try:
                    kind, value = receiver.recv()
                except EOFError:
                    process.join()
                    if current is not None:
                        rows.append((current, False, f"your code ended the Python process (exit status "
                                                     f"{process.exitcode}) instead of returning"))
                    break
                if kind == "error":
                    rows.append((current, False, value))
                    break
                if kind == "start":
                    current = value
                elif kind == "done":
                    rows += [(f"{current}: {name}", ok, message) for name, ok, message in value]
                    skip.append(current)
                    current = None
                elif kind == "end":
                    break
                else:  # "tasks": loaded
                    current = None
        finally:
            if process.is_alive():
                process.kill()
            process.join()
            receiver.close()
        if current in (None, LOADING):  # every task ran, or the notebook itself cannot load
            return rows
        skip.append(current)


# --------------------------------------------------------------------------------------------------
# Entry points


def validate_notebook(notebook: Path, release: Path | None = None, run_checks: bool = True,
                      timeout: float = DEFAULT_TIMEOUT_S) -> Report:
    """Everything validation finds in `notebook`, compared with `release` (default: its own metadata)."""
    notebook = Path(notebook)
    nb = _read_nb(notebook)
    meta, release_notebook = _reference(nb, notebook, release)
    report = Report(shown(notebook.name), meta["assignment"])
    try:
        code = extract(notebook, meta["extraction"])
        everything = extract(notebook, "cells")
    except SubmissionFormatError as exc:
        raise ValidateError(str(exc)) from None
    report.notes += [f"when grading, {w}" for w in code.warnings]
    _check_code(meta, code, everything, report)
    _check_cells(nb, meta, report)
    if run_checks:
        folders = [notebook.parent] + ([release_notebook.parent] if release_notebook else [])
        checks_dir = next((f for f in folders if (f / CHECKS_FILE).is_file()), None)
        if checks_dir is None:
            report.checks_not_run = f"keep {CHECKS_FILE} from the release next to your notebook and validate again"
        else:
            report.checks = run_public_checks(notebook, meta["extraction"], checks_dir, timeout)
    return report


def _notebook_path(caller_globals: dict) -> Path:
    """The notebook this kernel runs: Jupyter (server 2+) and VS Code say which; otherwise the only
    notebook of the working folder."""
    for candidate in (os.environ.get("JPY_SESSION_NAME"), caller_globals.get("__vsc_ipynb_file__")):
        if candidate and candidate.endswith(".ipynb"):
            # Jupyter may give the path relative to its root folder; the kernel runs in the notebook's.
            for path in (Path(candidate), Path.cwd() / Path(candidate).name):
                if path.is_file():
                    return path
    found = sorted(Path.cwd().glob("*.ipynb"))
    if len(found) == 1:
        return found[0]
    raise ValidateError('could not tell which notebook this is: call validate("your_notebook.ipynb")')


def validate(notebook: str | os.PathLike | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Print the report for `notebook` (default: the notebook calling this), as last saved: save first."""
    try:
        path = Path(notebook) if notebook is not None else _notebook_path(sys._getframe(1).f_globals)
        print(f"(validating {shown(path)} as last saved: save the notebook first)")
        print(validate_notebook(path, timeout=timeout).format())
    except ValidateError as exc:
        print(f"validate: {exc}")
