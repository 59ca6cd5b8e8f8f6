"""How strong is a hidden suite? Mutation analysis of the solution.

Each mutant is the source notebook with one small, plausible change inside a solution region
(between `### BEGIN SOLUTION` and `### END SOLUTION` of an answer cell): an off-by-one in a slice or
`range`, `<`/`<=` or `+`/`-` swapped, a `dim=` changed, a constant nudged, `round` turned into `floor`,
`.clamp` bounds shifted, a `.to(dtype)` removed, a statement deleted, a returned value replaced by the
first argument. Mutants are graded exactly like submissions (`scheduler.run_jobs`: same extraction,
sandbox, hidden suite and timeouts) next to the solution itself.

A mutant is *killed* when it fails a test the solution passes, *timed out* when the only tests it
loses ran out of time, *error* when the grader could not grade it or a test it loses was a grader
error, and *survived* when it passes everything the solution passes. A change that leaves the
function's syntax tree unchanged is never generated. Whether a survivor is equivalent to the solution
is judged by the instructor, in `docs/mistakes/<a>.md`.
"""

from __future__ import annotations

import ast
import copy
import difflib
import random
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.config import Assignment
from autograder.gradebook import SubmissionResult
from autograder.scheduler import Job, run_jobs, suite_hash

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SEED = 14  # the sample of mutants depends on nothing else: reruns grade the same ones
_COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_ARITH_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_CASTS = {"float", "half", "bfloat16", "double"}  # `.float()` etc.: removed like `.to(dtype)`


@dataclass(frozen=True)
class Mutant:
    number: int  # position in the full, deterministic list of the assignment's mutants
    cell: int  # 0-based index of the notebook cell
    question: str  # the answer cell's grade_id
    function: str  # `top_k_filter`, `MultiHeadSelfAttention.forward`
    kind: str
    line: int  # in the cell
    source: str  # the whole mutated cell
    diff: str

    @property
    def id(self) -> str:
        return f"m{self.number:03d}"


@dataclass
class Verdict:
    mutant: Mutant
    status: str  # killed, survived, timeout, error
    passed: list[str] = field(default_factory=list)  # tests it passed (what let a survivor through)
    lost: list[str] = field(default_factory=list)  # tests the solution passes and it does not
    message: str = ""


@dataclass
class Report:
    assignment: str
    verdicts: list[Verdict]
    total_generated: int
    seconds: float
    solution_problem: str = ""  # the solution itself did not grade cleanly: no verdict can be trusted

    def counts(self, verdicts=None) -> Counter:
        return Counter(v.status for v in (self.verdicts if verdicts is None else verdicts))

    @property
    def score(self) -> float:
        return self.counts()["killed"] / len(self.verdicts) if self.verdicts else 1.0

    def line(self) -> str:
        c = self.counts()
        sampled = f" (sample of {self.total_generated})" if len(self.verdicts) < self.total_generated else ""
        return (f"{self.assignment}: {c['killed']}/{len(self.verdicts)} killed ({self.score:.0%}), "
                f"{c['survived']} survived, {c['timeout']} timed out, {c['error']} errors{sampled}")

    def grouped(self, key: str) -> dict[str, Counter]:
        groups: dict[str, list] = defaultdict(list)
        for v in self.verdicts:
            groups[getattr(v.mutant, key)].append(v)
        return {name: self.counts(vs) for name, vs in groups.items()}


# ---------------------------------------------------------------- generating mutants


def _solution_lines(source: str) -> set[int]:
    """1-based line numbers inside BEGIN/END SOLUTION regions of a cell."""
    inside, lines = False, set()
    for number, text in enumerate(source.splitlines(), start=1):
        if text.strip().startswith(BEGIN):
            inside = True
        elif text.strip().startswith(END):
            inside = False
        elif inside:
            lines.add(number)
    return lines


def _const_int(node) -> int | None:
    """The value of `3` or `-3`; None for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _const_int(node.operand) is not None:
        return -_const_int(node.operand)
    return None


def _int_node(value: int) -> ast.expr:
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def _plus(node: ast.expr, delta: int) -> ast.expr:
    """`node + delta`, folded when `node` is a constant."""
    value = _const_int(node)
    if value is not None:
        return _int_node(value + delta)
    return ast.BinOp(copy.deepcopy(node), ast.Add() if delta > 0 else ast.Sub(), ast.Constant(abs(delta)))


def _with(node: ast.AST, **changes) -> ast.AST:
    new = copy.copy(node)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


def _method(call: ast.Call) -> str | None:
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _is_dtype(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "dtype" in text or (text.startswith("torch.") and text.split(".")[1] in {
        "float16", "bfloat16", "float32", "float64", "int8", "uint8", "int32", "int64", "float", "half", "long",
        "int", "double"})


def _first_argument(function: ast.FunctionDef, is_method: bool) -> str | None:
    params = [a.arg for a in function.args.posonlyargs + function.args.args]
    params = params[1:] if is_method and params[:1] in (["self"], ["cls"]) else params
    return params[0] if params else None


def _candidates(node: ast.AST, first_arg: str | None, skip: set[int]):
    """(target node, kind, replacement node) for every mutation inside `node`."""
    for child in ast.walk(node):
        if id(child) in skip:
            continue
        if isinstance(child, ast.Slice):
            for bound in ("lower", "upper"):
                value = getattr(child, bound)
                if value is not None:
                    skip.update(id(n) for n in ast.walk(value) if _const_int(n) is not None)
                    yield value, f"slice {bound} bound +1", _plus(value, 1)
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "range":
            for i, arg in enumerate(child.args):
                skip.update(id(n) for n in ast.walk(arg) if _const_int(n) is not None)
                yield arg, f"range argument {i + 1} +1", _plus(arg, 1)
        elif isinstance(child, ast.Compare):
            for i, op in enumerate(child.ops):
                if type(op) in _COMPARE_SWAPS:
                    ops = list(child.ops)
                    ops[i] = _COMPARE_SWAPS[type(op)]()
                    yield child, "comparison swapped", _with(child, ops=ops)
        elif isinstance(child, ast.BinOp) and type(child.op) in _ARITH_SWAPS:
            yield child, "arithmetic swapped", _with(child, op=_ARITH_SWAPS[type(child.op)]())
        elif isinstance(child, ast.AugAssign) and type(child.op) in _ARITH_SWAPS:
            yield child, "arithmetic swapped", _with(child, op=_ARITH_SWAPS[type(child.op)]())
        elif isinstance(child, ast.keyword) and child.arg == "dim" and _const_int(child.value) is not None:
            skip.update(id(n) for n in ast.walk(child.value))
            value = _const_int(child.value)
            yield child.value, "dim changed", _int_node(0 if value != 0 else -1)
        elif isinstance(child, ast.Call):
            yield from _call_candidates(child, skip)
        elif isinstance(child, ast.Constant) and type(child.value) in (int, float):
            value = child.value
            new = value + 1 if type(value) is int else (value * 0.8 if value else 0.1)
            yield child, "constant nudged", ast.Constant(new)
        elif isinstance(child, ast.Return) and child.value is not None and first_arg:
            if not (isinstance(child.value, ast.Name) and child.value.id == first_arg):
                yield child.value, "returns the first argument", ast.Name(first_arg, ast.Load())


def _call_candidates(call: ast.Call, skip: set[int]):
    method, func = _method(call), call.func
    if isinstance(func, ast.Name) and func.id == "round" and len(call.args) == 1:
        yield func, "round -> trunc", ast.Name("int", ast.Load())
    elif method == "round" and ast.unparse(func.value) == "torch" or method == "round" and not call.args:
        yield func, "round -> floor", _with(func, attr="floor")
    elif method in ("clamp", "clip"):
        bounds = call.args[1:] if ast.unparse(func.value) == "torch" else call.args
        bounds = list(bounds) + [k.value for k in call.keywords if k.arg in ("min", "max")]
        for i, bound in enumerate(bounds[:2]):
            skip.update(id(n) for n in ast.walk(bound) if _const_int(n) is not None)
            lower = i == 0 and not any(k.value is bound and k.arg == "max" for k in call.keywords)
            yield bound, f"clamp {'lower' if lower else 'upper'} bound shifted", _plus(bound, 1 if lower else -1)
    elif method == "to" and (any(_is_dtype(a) for a in call.args) or any(k.arg == "dtype" for k in call.keywords)):
        yield call, ".to(dtype) removed", func.value
    elif method in _CASTS and not call.args and not call.keywords:
        yield call, f".{method}() removed", func.value


def _deletable(function: ast.AST):
    """Statements of a body that may become `pass` (not a docstring, not `pass`, not a return)."""
    for node in ast.walk(function):
        for body_name in ("body", "orelse", "finalbody"):
            body = getattr(node, body_name, None)
            if not isinstance(body, list):
                continue
            for i, statement in enumerate(body):
                docstring = (i == 0 and body_name == "body" and isinstance(statement, ast.Expr)
                             and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str))
                if isinstance(statement, ast.stmt) and not docstring and not isinstance(
                        statement, (ast.Pass, ast.Return, ast.FunctionDef, ast.ClassDef)):
                    yield statement


def _graded_functions(tree: ast.Module):
    """(qualified name, function node, is_method) for the cell's top-level functions and methods."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node, False
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item, True


class _Replace(ast.NodeTransformer):
    """The tree with the one node at `target`'s position replaced: the mutant the text must parse to."""

    def __init__(self, target: ast.AST, replacement: ast.AST):
        self.where = (type(target), *_span(target))
        self.replacement = replacement

    def generic_visit(self, node):
        if (type(node), *_span(node)) == self.where:
            return self.replacement
        return super().generic_visit(node)


def _span(node: ast.AST) -> tuple:
    return tuple(getattr(node, a, None) for a in ("lineno", "col_offset", "end_lineno", "end_col_offset"))


def _splice(source: str, node: ast.AST, text: str) -> str:
    """`source` with `node`'s text replaced by `text`."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[line - 1] + len(lines[line - 1].encode()[:col].decode())

    return source[:offset(node.lineno, node.col_offset)] + text + source[offset(node.end_lineno, node.end_col_offset):]


def _mutated_source(source: str, target: ast.AST, replacement: ast.AST) -> str | None:
    """The cell's text with the smallest edit that parses to the intended tree (parentheses only
    where precedence needs them); None when no edit does."""
    intended = ast.dump(_Replace(target, replacement).visit(ast.parse(source)))
    text = ast.unparse(ast.fix_missing_locations(copy.deepcopy(replacement)))
    for attempt in (text, f"({text})"):
        mutated = _splice(source, target, attempt)
        try:
            if ast.dump(ast.parse(mutated)) == intended:
                return mutated
        except SyntaxError:
            pass
    return None


def cell_mutants(source: str) -> list[tuple[str, str, int, str]]:
    """(function, kind, line, mutated source) for every mutation of the solution code of one cell."""
    tree = ast.parse(source)
    allowed = _solution_lines(source)
    found = []
    for name, function, is_method in _graded_functions(tree):
        first_arg = _first_argument(function, is_method)
        sites = [(target, kind, new) for statement in function.body
                 for target, kind, new in _candidates(statement, first_arg, set())]
        sites += [(statement, "statement deleted", ast.Pass()) for statement in _deletable(function)]
        sites.sort(key=lambda s: (s[0].lineno, s[0].col_offset))
        for target, kind, new in sites:
            if allowed and target.lineno not in allowed:
                continue
            if ast.dump(new) == ast.dump(target):  # a no-op: nothing to grade
                continue
            mutated = _mutated_source(source, target, new)
            if mutated is not None:
                found.append((name, kind, target.lineno, mutated))
    return found


def generate(notebook: Path) -> list[Mutant]:
    """Every mutant of the notebook's answer cells, in notebook order."""
    nb = nbformat.read(notebook, as_version=4)
    mutants = []
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not (meta.get("solution") or BEGIN in cell.source):
            continue
        question = meta.get("grade_id", f"cell {index + 1}")
        for function, kind, line, mutated in cell_mutants(cell.source):
            diff = "".join(difflib.unified_diff(cell.source.splitlines(keepends=True),
                                                mutated.splitlines(keepends=True),
                                                f"solution cell {index + 1}", "mutant", n=1))
            mutants.append(Mutant(len(mutants), index, question, function, kind, line, mutated, diff))
    return mutants


def sample(mutants: list[Mutant], limit: int | None) -> list[Mutant]:
    """At most `limit` mutants, drawn with a fixed seed, kept in notebook order."""
    if limit is None or len(mutants) <= limit:
        return list(mutants)
    return sorted(random.Random(SEED).sample(mutants, limit), key=lambda m: m.number)


# ---------------------------------------------------------------- grading them


def _verdict(mutant: Mutant, outcome, passed_by_solution: set[str]) -> Verdict:
    if isinstance(outcome, BaseException):
        return Verdict(mutant, "error", message=f"{type(outcome).__name__}: {outcome}")
    if outcome.status != "graded":
        return Verdict(mutant, "error", message=outcome.message)
    lost = [r for r in outcome.results if r.test_id in passed_by_solution and r.status != "passed"]
    passed = [r for r in outcome.results if r.status == "passed"]
    # What let a survivor through: the passed tests of its own question (all of them if none is).
    passed = [r.test_id for r in ([r for r in passed if r.question == mutant.question] or passed)]
    statuses = {r.status for r in lost}
    status = ("killed" if "failed" in statuses else "timeout" if "timeout" in statuses
              else "error" if statuses else "survived")
    message = next((f"{r.test_id}: {r.message}" for r in lost if r.status == "error"), "")
    return Verdict(mutant, status, passed=passed, lost=[r.test_id for r in lost], message=message)


def _solution_problem(result) -> str:
    if isinstance(result, BaseException):
        return f"grading the solution failed: {type(result).__name__}: {result}"
    if result.status != "graded":
        return f"the solution could not be graded: {result.message}"
    failing = [r.test_id for r in result.results if r.status not in ("passed", "needs-gpu")]
    return f"the solution does not pass {', '.join(failing)}" if failing else ""


def run(assignment: Assignment, limit: int | None = None, jobs: int | None = None, on_done=None,
        kinds: set[str] | None = None) -> Report:
    """Grade the solution and a (sampled) set of its mutants with the assignment's hidden suite;
    `kinds` keeps only mutants of those kinds (before sampling)."""
    import time

    started = time.monotonic()
    notebook = sorted(assignment.source_dir.glob(f"{assignment.id}.ipynb")) or assignment.source_notebooks()
    all_mutants = [m for m in generate(notebook[0]) if kinds is None or m.kind in kinds]
    chosen = sample(all_mutants, limit)
    root, suite = str(assignment.root), suite_hash(assignment)
    nb = nbformat.read(notebook[0], as_version=4)
    with tempfile.TemporaryDirectory(prefix=f"autograder-mutants-{assignment.id}-") as tmp:
        todo = [Job(root, assignment.id, "solution", str(notebook[0]), suite)]
        for mutant in chosen:
            copy_nb = copy.deepcopy(nb)
            copy_nb.cells[mutant.cell].source = mutant.source
            path = Path(tmp) / mutant.id / f"{assignment.id}.ipynb"
            path.parent.mkdir()
            nbformat.write(copy_nb, path)
            todo.append(Job(root, assignment.id, mutant.id, str(path), suite))
        outcomes: dict[str, SubmissionResult | BaseException] = {}
        for job, outcome in run_jobs(todo, jobs):
            outcomes[job.submission_id] = outcome
            if on_done:
                on_done(job, outcome)
    solution = outcomes["solution"]
    problem = _solution_problem(solution)
    passed_by_solution = set() if problem else {r.test_id for r in solution.results if r.status == "passed"}
    verdicts = [_verdict(m, outcomes[m.id], passed_by_solution) for m in chosen]
    return Report(assignment.id, verdicts, len(all_mutants), time.monotonic() - started, problem)


def format_report(report: Report) -> str:
    """Plain-text report: the score line, counts per question and function, each survivor's diff."""
    out = [report.line(), f"  graded in {report.seconds:.0f} s "
                          f"({len(report.verdicts) / max(report.seconds, 1e-9) * 60:.1f} mutants per minute)"]
    if report.solution_problem:
        out.append(f"  WARNING: {report.solution_problem}; the verdicts below mean nothing until it does")
    for key in ("question", "function"):
        out.append(f"  per {key}:")
        for name, c in report.grouped(key).items():
            out.append(f"    {name}: {c['killed']}/{sum(c.values())} killed, {c['survived']} survived, "
                       f"{c['timeout']} timed out, {c['error']} errors")
    for v in report.verdicts:
        if v.status in ("survived", "error"):
            out.append(f"\n{v.status.upper()} {v.mutant.id} {v.mutant.function} line {v.mutant.line}: {v.mutant.kind}")
            if v.message:
                out.append(f"  {v.message}")
            out.append(f"  passed: {', '.join(v.passed) or 'no test'}")
            out.append("  " + v.mutant.diff.rstrip("\n").replace("\n", "\n  "))
    return "\n".join(out)


def write_html(report: Report, assignment: Assignment, out_dir: Path) -> Path:
    """`<out_dir>/<assignment>_mutants.html`, in the look of the instructor summary."""
    from autograder.exports import _template

    order = {"survived": 0, "error": 1, "timeout": 2, "killed": 3}
    verdicts = sorted(report.verdicts, key=lambda v: (order[v.status], v.mutant.number))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{assignment.id}_mutants.html"
    page.write_text(_template("mutants.html").render(assignment=assignment, report=report, verdicts=verdicts),
                    encoding="utf-8")
    return page
