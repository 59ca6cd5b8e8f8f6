"""How strong is a hidden suite? Mutation analysis of the solution.

Each mutant is the source notebook with one small, plausible change inside a solution region
(between `### BEGIN SOLUTION` and `### END SOLUTION` of an answer cell): an off-by-one in a slice or
`range`, `<`/`<=` or `+`/`-` swapped, a `dim=` changed, a constant nudged, `round` turned into `floor`,
`.clamp` bounds shifted, a `.to(dtype)` removed, a statement deleted, a returned value replaced by the
first argument. Mutants are graded exactly like submissions (`scheduler.run_jobs`: same extraction,
sandbox, hidden suite and timeouts) next to the solution itself.

A mutant is *killed* when it fails a test the solution passes, *timed out* when the only tests it
loses ran out of time, *error* when the grader could not grade it or a test it loses was a grader
error, and otherwise it passed everything the solution passes. Such a mutant is *equivalent* when it
returns exactly what the solution returns at every request the hidden suite made (calls of the
notebook's functions and classes, calls and attribute reads of the objects they returned), replayed in
order as made and with randomly perturbed tensors, and one of those requests runs the changed statement
(`_equivalence`); *accepted* when the instructor lists it in the
assignment's `mutation_accepted` with a reason, and *survived* otherwise. Equivalent and accepted
mutants count neither as survivors nor in the score. A change that leaves the function's syntax tree
unchanged is never generated.

A mutant's id is a hash of what it changes (question, function, kind, the changed lines and their
neighbours), not of its position: it stays the same across runs and across edits elsewhere in the
notebook, and an accepted id stops matching when the line it changes is edited.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import hashlib
import math
import random
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nbformat

from autograder.course.config import Assignment, ConfigError
from autograder.course.gradebook import SubmissionResult
from autograder.grading.scheduler import Job, run_jobs, suite_hash

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SEED = 14  # the sample of mutants and the random inputs depend on nothing else: reruns judge the same
RANDOM_VARIANTS = 2  # randomly perturbed replays of each call the suite made, for the equivalence check
_COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_ARITH_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_CASTS = {"float", "half", "bfloat16", "double"}  # `.float()` etc.: removed like `.to(dtype)`
PROBE = "AutograderReachProbe"  # raised by a survivor's probe where its change would run (not an Exception: few catch it)


@dataclass(frozen=True)
class Mutant:
    id: str  # `m` and 6 hex digits of a hash of what it changes: stable across runs
    number: int  # position in the full, deterministic list of the assignment's mutants
    cell: int  # 0-based index of the notebook cell
    question: str  # the answer cell's grade_id
    function: str  # `top_k_filter`, `MultiHeadSelfAttention.forward`
    kind: str
    line: int  # in the cell
    source: str  # the whole mutated cell
    diff: str
    probe: str  # the solution cell with the statement around the change replaced by raising PROBE ("": none)


@dataclass
class Verdict:
    mutant: Mutant
    status: str  # killed, survived, equivalent, accepted, timeout, error
    passed: list[str] = field(default_factory=list)  # tests it passed (what let a survivor through)
    lost: list[str] = field(default_factory=list)  # tests the solution passes and it does not
    message: str = ""  # a grader error; where a survivor differs from the solution; why it is accepted


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
    def judged(self) -> int:
        """The score's denominator: every graded mutant but the equivalent and the accepted ones."""
        c = self.counts()
        return len(self.verdicts) - c["equivalent"] - c["accepted"]

    @property
    def score(self) -> float:
        return self.counts()["killed"] / self.judged if self.judged else 1.0

    def line(self) -> str:
        c = self.counts()
        sampled = f" (sample of {self.total_generated})" if len(self.verdicts) < self.total_generated else ""
        return (f"{self.assignment}: {c['killed']}/{self.judged} killed ({self.score:.0%}), {c['survived']} survived, "
                f"{c['equivalent']} equivalent, {c['accepted']} accepted, {c['timeout']} timed out, "
                f"{c['error']} errors{sampled}")

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


class CellMutant(NamedTuple):
    function: str
    kind: str
    line: int
    source: str  # the mutated cell
    probe: str  # the unmutated cell, raising PROBE where the mutated statement would run ("" where none parses)


def _reach_probe(source: str, function: ast.AST, target: ast.AST) -> str:
    """The cell with the innermost statement of `function` around `target` replaced by `raise PROBE`
    (the next one out where that does not parse as intended, as for an `elif`): the statement runs
    exactly when the probe raises."""
    def holds(statement: ast.stmt) -> bool:
        return ((statement.lineno, statement.col_offset) <= (target.lineno, target.col_offset)
                and (target.end_lineno, target.end_col_offset) <= (statement.end_lineno, statement.end_col_offset))

    around = [node for node in ast.walk(function) if isinstance(node, ast.stmt) and node is not function and holds(node)]
    for statement in sorted(around, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        probe = _mutated_source(source, statement, _probe_statement())
        if probe is not None:
            return probe
    return ""


def _probe_statement() -> ast.stmt:
    return ast.parse(f"raise type({PROBE!r}, (BaseException,), {{}})()").body[0]


def cell_mutants(source: str) -> list[CellMutant]:
    """Every mutation of the solution code of one cell."""
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
                found.append(CellMutant(name, kind, target.lineno, mutated, _reach_probe(source, function, target)))
    return found


def _mutant_id(question: str, function: str, kind: str, diff: str, taken: set[str]) -> str:
    """A hash of the change without the diff's line numbers and cell position (the same change of
    the same code keeps its id when other cells or lines move); a repeat gets the next free hash."""
    body = [line for line in diff.splitlines()[2:] if not line.startswith("@@")]
    key = "\n".join([question, function, kind, *body])
    while True:
        mutant_id = "m" + hashlib.sha256(key.encode()).hexdigest()[:6]
        if mutant_id not in taken:
            taken.add(mutant_id)
            return mutant_id
        key += "\n(again)"


def generate(notebook: Path) -> list[Mutant]:
    """Every mutant of the notebook's answer cells, in notebook order."""
    nb = nbformat.read(notebook, as_version=4)
    mutants, taken = [], set()
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not (meta.get("solution") or BEGIN in cell.source):
            continue
        question = meta.get("grade_id", f"cell {index + 1}")
        for function, kind, line, mutated, probe in cell_mutants(cell.source):
            diff = "".join(difflib.unified_diff(cell.source.splitlines(keepends=True),
                                                mutated.splitlines(keepends=True),
                                                f"solution cell {index + 1}", "mutant", n=1))
            mutants.append(Mutant(_mutant_id(question, function, kind, diff, taken), len(mutants), index, question,
                                  function, kind, line, mutated, diff, probe))
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


# ---------------------------------------------------------------- equivalent survivors
# The verdict is reached here, in the trusted process: the sandboxes only answer requests. The requests
# are those the hidden suite made when it graded the solution (recorded by the oracle: calls of the
# notebook's functions and classes, and calls and attribute reads of the objects they returned), replayed
# in order, as they were and with every tensor argument replaced by a random one of the same shape and
# dtype. An object that stays in the sandbox is followed through the replay by the requests that use it.


@dataclass(frozen=True)
class _Step:
    label: str
    request: dict  # decoded; its HandleRefs are the recorded run's
    run: int  # 0: as the suite made it; 1..RANDOM_VARIANTS: on random inputs (each run has its own objects)
    generation: int  # of the recorded sandbox, whose table the HandleRefs index
    returned: tuple[int, ...]  # the recorded ids of the handles its reply held, in `wire.walk` order


def _perturb(value, generator):
    """A random tensor of `value`'s shape, dtype and device near it (floats: Gaussian noise of its
    spread; integers: uniform from its min to its max); a module the test passes, with such parameters;
    anything else as it is."""
    import torch

    from autograder.grading import wire

    if isinstance(value, wire.ModuleRef):
        return dataclasses.replace(
            value, parameters={n: _perturb(t, generator) for n, t in value.parameters.items()},
            children={n: _perturb(c, generator) for n, c in value.children.items()})
    if type(value) is not torch.Tensor or value.numel() == 0 or value.dtype == torch.bool or value.is_complex():
        return value
    base = value.detach().cpu()
    if value.is_floating_point():
        finite = base.float()[base.float().isfinite()]
        spread = float(finite.std()) if finite.numel() > 1 else 1.0
        spread = spread if math.isfinite(spread) and spread > 0 else 1.0
        new = base.float() + torch.randn(base.shape, generator=generator) * spread
    else:
        new = torch.randint(int(base.min()), int(base.max()) + 1, base.shape, generator=generator)
    return new.to(dtype=value.dtype, device=value.device)


def _replays(calls: list) -> list[_Step]:
    """The suite's requests (RecordedRequest) in order, then RANDOM_VARIANTS more runs of all of them with
    perturbed tensors. Tripwires are not armed (a mutant changes no API call of the solution)."""
    import torch

    from autograder.grading import wire

    recorded = [(c, {**wire.decode_message(c.payload), "forbidden": []}) for c in calls]
    steps = [_Step(c.label, r, 0, c.generation, tuple(c.returned)) for c, r in recorded]
    generator = torch.Generator().manual_seed(SEED)
    for run in range(1, RANDOM_VARIANTS + 1):
        for c, request in recorded:
            args, kwargs = wire.walk([request["args"], request["kwargs"]], lambda v: _perturb(v, generator))
            steps.append(_Step(c.label, {**request, "args": args, "kwargs": kwargs}, run,
                               c.generation, tuple(c.returned)))
    return steps


def _same(a, b) -> bool:
    """Exactly equal: same types, dtypes and shapes, equal elements (NaN where the other has NaN); objects
    that stay in the sandbox by their type (what is done with them is compared by the requests that use them)."""
    import torch

    from autograder.grading.oracle import Handle

    if type(a) is not type(b):
        return False
    if isinstance(a, Handle):
        return a.remote_type == b.remote_type
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device or a.requires_grad != b.requires_grad:
            return False
        if a.is_floating_point() or a.is_complex():
            nan = a.isnan()
            return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])
        return torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _replay(assignment: Assignment, notebook: str, steps: list[_Step], stop=None) -> list:
    """What each step gives in one sandbox running `notebook`, in order: ("returned", value), ("raised",
    exception type) or ("failed", message); ("lost", None) when it timed out or died, or uses an object this
    replay does not have. Stops after the first outcome `stop(index, outcome)` is true for."""
    from autograder.grading import wire
    from autograder.grading.extraction import extract
    from autograder.grading.oracle import GradingSession, GraderFault, Handle, StudentFault, SubmissionError
    from autograder.grading.sandbox import SandboxDied, SandboxTimeout

    session = GradingSession(assignment, extract(Path(notebook), assignment.extraction))
    objects: dict[tuple, wire.HandleRef] = {}  # (run, recorded generation, recorded id) -> this replay's
    outcomes = []
    try:
        for index, step in enumerate(steps):
            missing: list = []

            def ours(value, step=step, missing=missing):
                if not isinstance(value, wire.HandleRef):
                    return value
                key = (step.run, step.generation, value.id)
                if key not in objects:
                    missing.append(key)
                return objects.get(key, value)

            request = wire.walk(step.request, ours)
            session.used_s = 0.0  # replays run several times the suite's calls: only the per-call limit applies
            if missing:
                outcomes.append(("lost", None))
                continue
            try:
                value = session.send(wire.encode_message(request), step.label, retry=not objects)
                outcome = ("returned", value)
                handles: list = []
                wire.walk(value, lambda leaf: handles.append(leaf._handle_ref) if isinstance(leaf, Handle) else None)
                if len(handles) == len(step.returned):
                    objects.update({(step.run, step.generation, old): new for old, new in zip(step.returned, handles)})
            except SubmissionError as exc:
                outcome = ("raised", exc.type_name)
            except StudentFault as exc:
                outcome = ("failed", str(exc))
            except (SandboxTimeout, SandboxDied, GraderFault):
                outcome = ("lost", None)
            outcomes.append(outcome)
            if stop is not None and stop(index, outcome):
                break
    finally:
        session.close()
    return outcomes


def _equivalence(course_root: str, assignment_id: str, solution: str, survivors: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Runs in a grading worker: for each survivor (id -> (mutant notebook, probe notebook)), "" when it gives
    exactly what the solution gives at every replayed step and a step runs its changed statement (its probe
    raises there), else the first step where it differs, or why it cannot be judged."""
    from autograder.course.config import load_course
    from autograder.grading.extraction import extract
    from autograder.grading.oracle import run_suite

    assignment = load_course(Path(course_root)).get(assignment_id)
    mutants = {m.id: m for m in generate(Path(solution))}
    calls: list = []
    run_suite(assignment, extract(Path(solution), assignment.extraction), calls=calls)
    steps = _replays(calls)
    expected = _replay(assignment, solution, steps)
    # Compared: the steps where the solution gives an answer, and the same answer again in a second sandbox
    # (not where it timed out, nor where it draws unseeded random numbers).
    again = _replay(assignment, solution, steps)
    compared = [e[0] != "lost" and _same(e, a) for e, a in zip(expected, again)]
    found = {}
    for mutant_id, (notebook, probe) in survivors.items():
        mutant = mutants[mutant_id]
        outcomes = _replay(assignment, notebook, steps, lambda i, o: compared[i] and not _same(o, expected[i]))
        last = len(outcomes) - 1
        if compared[last] and not _same(outcomes[last], expected[last]):
            how = "as the suite made it" if steps[last].run == 0 else "on random inputs"
            found[mutant_id] = (f"not equivalent: differs from the solution on `{steps[last].label}` {how} "
                                f"(step {last + 1} of {len(steps)} replayed)")
            continue
        reached = probe and _replay(assignment, probe, steps, lambda i, o: o == ("raised", PROBE))[-1:] == [("raised", PROBE)]
        found[mutant_id] = "" if reached else (
            f"not judged: none of the {len(steps)} replayed steps of the suite runs line {mutant.line} of "
            f"`{mutant.function}` (it is reached only through code the suite does not call, or not at all)")
    return found


def _judge_equivalence(assignment: Assignment, solution: str, survivors: dict[str, tuple[str, str]]) -> dict[str, str]:
    """`_equivalence` in a worker process (this one stays free of torch and of the sandboxes' traffic)."""
    from autograder.grading import warm

    try:
        # its sandboxes fork from the batch's forkserver, not from it
        with warm.pool(warm.start(assignment), 1) as pool:
            return pool.submit(_equivalence, str(assignment.root), assignment.id, solution, survivors).result()
    except Exception as exc:  # noqa: BLE001 - the grading verdicts stand; only equivalence is unknown
        return {mutant: f"equivalence not judged: {type(exc).__name__}: {exc}" for mutant in survivors}


def run(assignment: Assignment, limit: int | None = None, jobs: int | None = None, on_done=None,
        kinds: set[str] | None = None) -> Report:
    """Grade the solution and a (sampled) set of its mutants with the assignment's hidden suite, then
    judge which survivors are equivalent and which are accepted; `kinds` keeps only mutants of those
    kinds (before sampling)."""
    import time

    started = time.monotonic()
    notebook = sorted(assignment.source_dir.glob(f"{assignment.id}.ipynb")) or assignment.source_notebooks()
    every = generate(notebook[0])
    unknown = sorted(set(assignment.mutation_accepted) - {m.id for m in every})
    if unknown:
        raise ConfigError(f"course_config.py: {assignment.id}: mutation_accepted names {', '.join(unknown)}, which "
                          f"is not a mutant of the solution (was its line edited?); `autograder mutants "
                          f"{assignment.id}` prints the current ids")
    all_mutants = [m for m in every if kinds is None or m.kind in kinds]
    chosen = sample(all_mutants, limit)
    root, suite = str(assignment.root), suite_hash(assignment)
    nb = nbformat.read(notebook[0], as_version=4)
    with tempfile.TemporaryDirectory(prefix=f"autograder-mutants-{assignment.id}-") as tmp:

        def written(mutant: Mutant, source: str, folder: str) -> str:
            """The solution notebook with the mutant's cell replaced by `source`, in a folder of its own."""
            copy_nb = copy.deepcopy(nb)
            copy_nb.cells[mutant.cell].source = source
            path = Path(tmp) / mutant.id / folder / f"{assignment.id}.ipynb"
            path.parent.mkdir(parents=True)
            nbformat.write(copy_nb, path)
            return str(path)

        todo = [Job(root, assignment.id, "solution", str(notebook[0]), suite)]
        todo += [Job(root, assignment.id, m.id, written(m, m.source, "mutant"), suite) for m in chosen]
        outcomes: dict[str, SubmissionResult | BaseException] = {}
        for job, outcome in run_jobs(todo, jobs):
            outcomes[job.submission_id] = outcome
            if on_done:
                on_done(job, outcome)
        solution = outcomes["solution"]
        problem = _solution_problem(solution)
        passed_by_solution = set() if problem else {r.test_id for r in solution.results if r.status == "passed"}
        verdicts = [_verdict(m, outcomes[m.id], passed_by_solution) for m in chosen]
        survivors = {v.mutant.id: (str(Path(tmp) / v.mutant.id / "mutant" / f"{assignment.id}.ipynb"),
                                   v.mutant.probe and written(v.mutant, v.mutant.probe, "probe"))
                     for v in verdicts if v.status == "survived"}
        judged = _judge_equivalence(assignment, str(notebook[0]), survivors) if survivors and not problem else {}
    for v in verdicts:
        if v.mutant.id in judged:
            v.message = judged[v.mutant.id] or "returns exactly what the solution returns at every replayed step"
            v.status = "survived" if judged[v.mutant.id] else "equivalent"
        if v.status == "survived" and v.mutant.id in assignment.mutation_accepted:
            v.status, v.message = "accepted", assignment.mutation_accepted[v.mutant.id]
    return Report(assignment.id, verdicts, len(all_mutants), time.monotonic() - started, problem)


def _listed(report: Report) -> list[Verdict]:
    """Verdicts in the order a report shows them: what needs the instructor first."""
    order = ("survived", "error", "accepted", "equivalent", "timeout", "killed")
    return sorted(report.verdicts, key=lambda v: (order.index(v.status), v.mutant.number))


def format_report(report: Report) -> str:
    """Plain-text report: the score line, counts per question and function, the diff of each survivor,
    grader error, accepted and equivalent mutant."""
    out = [report.line(), f"  graded in {report.seconds:.0f} s "
                          f"({len(report.verdicts) / max(report.seconds, 1e-9) * 60:.1f} mutants per minute)"]
    if report.solution_problem:
        out.append(f"  WARNING: {report.solution_problem}; the verdicts below mean nothing until it does")
    for key in ("question", "function"):
        out.append(f"  per {key}:")
        for name, c in report.grouped(key).items():
            out.append(f"    {name}: {c['killed']}/{sum(c.values())} killed, {c['survived']} survived, "
                       f"{c['equivalent']} equivalent, {c['accepted']} accepted, {c['timeout']} timed out, "
                       f"{c['error']} errors")
    for v in _listed(report):
        if v.status in ("timeout", "killed"):
            break
        out.append(f"\n{v.status.upper()} {v.mutant.id} {v.mutant.function} line {v.mutant.line}: {v.mutant.kind}")
        if v.message:
            out.append(f"  {v.message}")
        out.append(f"  passed: {', '.join(v.passed) or 'no test'}")
        out.append("  " + v.mutant.diff.rstrip("\n").replace("\n", "\n  "))
    return "\n".join(out)


def write_html(report: Report, assignment: Assignment, out_dir: Path) -> Path:
    """`<out_dir>/<assignment>_mutants.html`, in the look of the instructor summary."""
    from autograder.exports.formats import page_template

    verdicts = _listed(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{assignment.id}_mutants.html"
    page.write_text(page_template("mutants.html").render(assignment=assignment, report=report, verdicts=verdicts),
                    encoding="utf-8")
    return page
