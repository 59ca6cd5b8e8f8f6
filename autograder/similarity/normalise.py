"""Code as a stream of tokens that the usual disguises do not change.

Names a team chose become `N`; imported names become the dotted path they stand for (`F.softmax` and
`torch.nn.functional.softmax` are one token), operators and constants (127, 1e-6, einsum strings) are
kept. Before the tokens are written the syntax tree is put in a canonical form: dead code goes
(unused assignments, `pass`, `if False:`, prints, bare strings, so comments and docstrings too),
`x += y` becomes `x = x + y`, a counting `while` becomes a `for`, temporaries used once are inlined
(a split expression and a merged one read the same), comprehensions and `append` loops write the
same tokens, operands of commutative operators and independent statements are sorted.

Each token keeps the line it came from, so matches can be shown in the code as the team wrote it.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import hashlib
import heapq
from dataclasses import dataclass, field

HIDDEN = "N"
OTHER_CODE = "(other code)"  # what a team wrote outside graded functions and the helpers they call
_BUILTINS = frozenset(dir(builtins))
_COMMUTATIVE = (ast.Add, ast.Mult, ast.BitAnd, ast.BitOr, ast.BitXor)
_SWAPPED = {ast.Gt: ast.Lt, ast.GtE: ast.LtE}
_SYMMETRIC = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)
_MUTATING = frozenset({"append", "extend", "insert", "pop", "remove", "add", "update", "setdefault", "clear",
                       "sort", "reverse", "discard"})
_BARRIERS = (ast.Return, ast.Raise, ast.Break, ast.Continue, ast.Global, ast.Nonlocal, ast.Try)
_MAX_STRING = 40  # longer string constants become a hash: the same, and short to store
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class Unit:
    """One graded function (with the helpers it calls), a public function, or a team's other code."""

    name: str
    text: str  # the code as written, shown side by side
    # the tokens of each top-level statement and the 1-based line in `text` of each token; k-grams never
    # span two statements, so a statement reads the same whatever a team put around it
    streams: list[tuple[list[str], list[int]]] = field(default_factory=list)


@dataclass
class _Segment:
    """A top-level statement and where its lines go in its unit's text."""

    node: ast.stmt
    source_lines: list[str]
    first: int  # 1-based line of the statement (its decorators included) in its cell
    text: str = ""
    _tokens: tuple[list[str], list[int]] | None = None

    def __post_init__(self):
        self.text = "\n".join(self.source_lines[self.first - 1:self.node.end_lineno])

    @functools.cached_property
    def names(self) -> set[str]:
        """The names it uses (read before the canonical form rewrites the tree)."""
        return {n.id for n in _walk(self.node, (ast.AST,)) if isinstance(n, ast.Name)}

    def stream(self, aliases: dict[str, str]) -> tuple[list[str], list[int]]:
        """Its tokens, computed once (a helper belongs to every graded function that calls it)."""
        if self._tokens is None:
            self._tokens = _stream(self.node, self.text, self.first, aliases)
        return self._tokens


def units_of_cells(cells: list[str], graded: list[str]) -> list[Unit]:
    """The units of a notebook's code cells: one per graded name the notebook defines, holding the
    definition and every helper of the notebook it calls, and `OTHER_CODE` for the rest (imports aside).
    A cell that does not parse is left out (extraction already said so when grading)."""
    segments: list[_Segment] = []
    for source in cells:
        try:
            body = ast.parse(source).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        lines = source.splitlines()
        for node in body:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            segments.append(_Segment(node, lines, first))
    aliases = _aliases(s.node for s in segments)
    defined = {s.node.name: s for s in segments if isinstance(s.node, DEFINITIONS)}  # the last definition runs
    taken: set[str] = set()
    units = []
    for name in graded:
        if name not in defined:
            continue
        members = [defined[name]] + [defined[h] for h in sorted(_helpers(name, defined, set(graded)))]
        taken.update(s.node.name for s in members)
        units.append(_unit(name, members, aliases, sort_rest=False))
    rest = [s for s in segments if not isinstance(s.node, (ast.Import, ast.ImportFrom))
            and not (isinstance(s.node, DEFINITIONS) and (s.node.name in taken or defined.get(s.node.name) is not s))]
    if rest:
        units.append(_unit(OTHER_CODE, rest, aliases, sort_rest=True))
    return units


def units_of_module(source: str) -> list[Unit]:
    """Every function and method of a Python file (public code), each a unit named by its qualified name."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = source.splitlines()
    aliases = _aliases(tree.body)
    units = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            units += [_unit(f"{node.name}.{m.name}", [_Segment(m, lines, _first(m))], aliases, False) for m in methods]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            units.append(_unit(node.name, [_Segment(node, lines, _first(node))], aliases, False))
    return units


def _first(node: ast.stmt) -> int:
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])


def _helpers(name: str, defined: dict[str, _Segment], graded: set[str]) -> set[str]:
    """Top-level definitions of the notebook that `name` reaches through the names it uses, graded ones aside."""
    found, pending = set(), [name]
    while pending:
        for used in defined[pending.pop()].names:
            if used in defined and used not in graded and used not in found and used != name:
                found.add(used)
                pending.append(used)
    return found


_STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)


def _walk(node: ast.AST, kinds: type | tuple[type, ...] = ast.AST) -> list[ast.AST]:
    """`node` and every node below it of `kinds`, in `ast.walk`'s order; several times faster than
    `ast.walk`, and normalising is mostly walking trees."""
    found = [node]
    for sub in found:  # grows while it is read
        for name in sub._fields:
            child = getattr(sub, name, None)
            if isinstance(child, list):
                found += [c for c in child if isinstance(c, kinds)]
            elif isinstance(child, kinds):
                found.append(child)
    return found


def _aliases(nodes) -> dict[str, str]:
    """Imported name -> the dotted path it stands for, from every import (in functions too)."""
    aliases = {}
    for top in nodes:
        for node in _walk(top, _STATEMENTS):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases.setdefault(alias.name.split(".")[0], alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _unit(name: str, segments: list[_Segment], aliases: dict[str, str], sort_rest: bool) -> Unit:
    """Tokens of the segments; the first stays first (the graded definition), the others (helpers,
    top-level code) are sorted by their tokens, so moving them around changes nothing."""
    texts, streams, offset = [], [], 0
    for segment in segments:
        tokens, lines = segment.stream(aliases)
        streams.append((tokens, [line + offset for line in lines]))
        texts.append(segment.text)
        offset += segment.text.count("\n") + 2  # a blank line between segments
    head, rest = (streams[:0], streams) if sort_rest else (streams[:1], streams[1:])
    return Unit(name, "\n\n".join(texts), head + sorted(rest, key=lambda s: s[0]))


_STREAMS: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[list[str], list[int]]] = {}
_MAX_STREAMS = 20_000  # statements remembered; every hand-in repeats the release's cells


def _stream(node: ast.stmt, text: str, first: int, aliases: dict[str, str]) -> tuple[list[str], list[int]]:
    """The tokens of one top-level statement and their lines (1 = the statement's first line). The
    canonical form rewrites `node`, so each statement is read once; a statement's tokens depend only on
    its text and the imports in force, so a text met before (the release's own cells, in every hand-in)
    is not read again."""
    key = (text, tuple(sorted(aliases.items())))
    found = _STREAMS.get(key)
    if found is None:
        node = _canonical(node)
        emitter = _Emitter(aliases, *_bound(node), 1 - first)
        emitter.stmt(node)
        if len(_STREAMS) >= _MAX_STREAMS:
            _STREAMS.clear()
        found = _STREAMS[key] = (emitter.tokens, emitter.lines)
    return found


def _bound(node: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound inside a definition (arguments, assignments, loop and `with` targets, ...), and the
    attributes the code sets (`self.w_q = ...`): the team named both, so both are hidden."""
    names, attributes = set(), set()
    for sub in _walk(node):
        if isinstance(sub, ast.Name):
            if isinstance(sub.ctx, (ast.Store, ast.Del)):
                names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            if isinstance(sub.ctx, ast.Store):
                attributes.add(sub.attr)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            names.add(sub.name)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
    return names, attributes


# ---------------------------------------------------------------- canonical form of the syntax tree

def _canonical(node: ast.stmt) -> ast.stmt:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.body = _clean_block(node.body)
        _simplify(node)
    elif isinstance(node, ast.ClassDef):
        node.body = [_canonical(s) for s in _clean_block(node.body)]
    else:
        cleaned = _clean_block([node])
        node = cleaned[0] if len(cleaned) == 1 else ast.Pass(lineno=node.lineno)
    return node


def _is_dead(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr):
        value = stmt.value
        return (isinstance(value, (ast.Constant, ast.Name)) or
                (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print"))
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target, value = stmt.targets[0], stmt.value
        return isinstance(target, ast.Name) and isinstance(value, ast.Name) and target.id == value.id
    return isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and stmt.test.value


def _constant_truth(test: ast.expr) -> bool | None:
    if isinstance(test, ast.Constant):
        return bool(test.value)
    return None


def _clean_block(body: list[ast.stmt]) -> list[ast.stmt]:
    """Dead statements out, constant `if`s resolved, `x op= y` spelled out, counting `while`s as `for`s."""
    out: list[ast.stmt] = []
    for stmt in body:
        if _is_dead(stmt):
            continue
        if isinstance(stmt, ast.If):
            truth = _constant_truth(stmt.test)
            if truth is not None:
                out += _clean_block(stmt.body if truth else stmt.orelse)
                continue
        if isinstance(stmt, ast.While) and _constant_truth(stmt.test) is False:
            continue
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, (ast.Name, ast.Attribute, ast.Subscript)):
            load = copy.deepcopy(stmt.target)
            _set_ctx(load, ast.Load())
            stmt = ast.copy_location(ast.Assign(targets=[stmt.target], value=ast.copy_location(
                ast.BinOp(left=load, op=stmt.op, right=stmt.value), stmt)), stmt)
        if isinstance(stmt, ast.While):
            stmt = _counting_while_as_for(stmt, out)
        for part in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, part, None), list) and not isinstance(stmt, ast.ClassDef):
                setattr(stmt, part, _clean_block(getattr(stmt, part)))
        for handler in getattr(stmt, "handlers", []):
            handler.body = _clean_block(handler.body)
        if isinstance(stmt, (ast.If, ast.For, ast.While, ast.With)) and not stmt.body and not getattr(stmt, "orelse", []):
            continue
        comprehension = _append_loop_as_comprehension(out[-1], stmt) if out else None
        if comprehension is not None:
            out[-1] = comprehension
            continue
        out.append(stmt)
    return out


def _append_loop_as_comprehension(before: ast.stmt, loop: ast.stmt) -> ast.stmt | None:
    """`xs = []` and `for t in it: [if c:] xs.append(e)` -> `xs = [e for t in it [if c]]`."""
    if not (isinstance(before, ast.Assign) and len(before.targets) == 1 and isinstance(before.targets[0], ast.Name)
            and isinstance(before.value, ast.List) and not before.value.elts
            and isinstance(loop, ast.For) and not loop.orelse and len(loop.body) == 1):
        return None
    body, conditions = loop.body[0], []
    if isinstance(body, ast.If) and not body.orelse and len(body.body) == 1:
        conditions, body = [body.test], body.body[0]
    if not (isinstance(body, ast.Expr) and _is_accumulation(body.value) and isinstance(body.value.func.value, ast.Name)
            and body.value.func.value.id == before.targets[0].id and body.value.func.attr == "append"):
        return None
    generator = ast.comprehension(target=loop.target, iter=loop.iter, ifs=conditions, is_async=0)
    value = ast.copy_location(ast.ListComp(elt=body.value.args[0], generators=[generator]), loop)
    return ast.copy_location(ast.Assign(targets=before.targets, value=value), before)


def _set_ctx(node: ast.AST, ctx) -> None:
    if hasattr(node, "ctx"):
        node.ctx = ctx


def _counting_while_as_for(loop: ast.While, before: list[ast.stmt]) -> ast.stmt:
    """`i = a; while i < b: ...; i += 1` -> `for i in range(a, b): ...` (the `i = a` before it is dropped)."""
    test = loop.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Lt)
            and isinstance(test.left, ast.Name) and loop.body and not loop.orelse):
        return loop
    counter, last = test.left.id, loop.body[-1]
    step = (isinstance(last, ast.AugAssign) and isinstance(last.op, ast.Add) and isinstance(last.target, ast.Name)
            and last.target.id == counter and isinstance(last.value, ast.Constant) and last.value.value == 1)
    if not step:
        return loop
    args = [test.comparators[0]]
    for i in range(len(before) - 1, -1, -1):  # the counter's start, where nothing since has used it
        stmt = before[i]
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                and stmt.targets[0].id == counter:
            start = before.pop(i).value
            if not (isinstance(start, ast.Constant) and start.value == 0):
                args.insert(0, start)
            break
        if any(isinstance(n, ast.Name) and n.id == counter for n in _walk(stmt)):
            break
    call = ast.copy_location(ast.Call(func=ast.Name("range", ast.Load()), args=args, keywords=[]), test)
    return ast.copy_location(ast.For(target=ast.Name(counter, ast.Store()), iter=call, body=loop.body[:-1],
                                     orelse=[], type_comment=None), loop)


def _name_uses(node: ast.AST) -> tuple[dict[str, int], dict[str, int]]:
    loads: dict[str, int] = {}
    stores: dict[str, int] = {}
    for sub in _walk(node):
        if isinstance(sub, ast.Name):
            counts = loads if isinstance(sub.ctx, ast.Load) else stores
            counts[sub.id] = counts.get(sub.id, 0) + 1
        elif isinstance(sub, ast.arg):
            stores[sub.arg] = stores.get(sub.arg, 0) + 1
    return loads, stores


def _blocks(node: ast.AST):
    """Every statement list inside `node` (not inside nested definitions)."""
    for part in ("body", "orelse", "finalbody"):
        block = getattr(node, part, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            yield block
            for stmt in block:
                if not isinstance(stmt, DEFINITIONS):
                    yield from _blocks(stmt)
    for handler in getattr(node, "handlers", []):
        yield handler.body
        for stmt in handler.body:
            yield from _blocks(stmt)


def _simplify(function: ast.AST) -> None:
    """Remove assignments to names nothing reads (inserted dead code) and inline temporaries assigned once
    and read once, later (`a = f(x); return g(a)` and `return g(f(x))` then read the same), until none is
    left. The counts of loads and stores are kept up to date instead of recounted after each change."""
    loads, stores = _name_uses(function)
    blocks = list(_blocks(function))  # removing an assignment removes no block
    changed = True
    while changed:
        changed = False
        for block in blocks:
            i = 0
            while i < len(block):
                stmt = block[i]
                if isinstance(stmt, ast.Assign):
                    if all(isinstance(t, ast.Name) and not loads.get(t.id) for t in stmt.targets):
                        gone_loads, gone_stores = _name_uses(stmt)
                        for counts, gone in ((loads, gone_loads), (stores, gone_stores)):
                            for name, count in gone.items():
                                counts[name] -= count
                        del block[i]
                        changed = True
                        continue
                    target = stmt.targets[0]
                    if len(stmt.targets) == 1 and isinstance(target, ast.Name) and loads.get(target.id) == 1 \
                            and stores.get(target.id) == 1 \
                            and any(_replace_use(later, target.id, stmt.value) for later in block[i + 1:]):
                        loads[target.id] -= 1
                        stores[target.id] -= 1
                        del block[i]
                        changed = True
                        continue
                i += 1


def _replace_use(tree: ast.AST, name: str, value: ast.expr) -> bool:
    """Put `value` where `tree` reads `name` (read once); True if it did."""
    for parent in _walk(tree):
        for attribute, child in ast.iter_fields(parent):
            if isinstance(child, ast.Name) and child.id == name:
                setattr(parent, attribute, value)
                return True
            if isinstance(child, list):
                for k, item in enumerate(child):
                    if isinstance(item, ast.Name) and item.id == name:
                        child[k] = value
                        return True
    return False


# ---------------------------------------------------------------- tokens

class _Emitter:
    """Writes the tokens of a canonical tree; `lines` holds the unit line of each token."""

    def __init__(self, aliases: dict[str, str], bound: set[str], attributes: set[str], line_offset: int):
        self.aliases, self.bound, self.attributes, self.offset = aliases, bound, attributes, line_offset
        self.tokens: list[str] = []
        self.lines: list[int] = []
        self.line = 1

    def put(self, *tokens: str) -> None:
        self.tokens += tokens
        self.lines += [self.line + self.offset] * len(tokens)

    def sub(self, node: ast.AST) -> tuple[list[str], list[int]]:
        """The tokens of `node` alone, to be ordered before they are put."""
        saved = self.tokens, self.lines, self.line
        self.tokens, self.lines = [], []
        if isinstance(node, ast.stmt):
            self.stmt(node)
        else:
            self.expr(node)
        out = self.tokens, self.lines
        self.tokens, self.lines, self.line = saved
        return out

    def put_sorted(self, nodes: list[ast.AST]) -> None:
        for tokens, lines in sorted((self.sub(n) for n in nodes), key=lambda s: s[0]):
            self.tokens += tokens
            self.lines += lines

    # statements
    def block(self, body: list[ast.stmt]) -> None:
        """Statements in a canonical order that keeps every dependency (Kahn's algorithm, smallest first)."""
        emitted = [self.sub(s) for s in body]
        effects = [_effects(s) for s in body]
        after: list[set[int]] = [set() for _ in body]
        waiting = [0] * len(body)
        for j in range(len(body)):
            for i in range(j):
                if _depends(effects[i], effects[j]):
                    after[i].add(j)
                    waiting[j] += 1
        ready = [(emitted[i][0], i) for i in range(len(body)) if not waiting[i]]
        heapq.heapify(ready)
        while ready:
            _, i = heapq.heappop(ready)
            self.tokens += emitted[i][0]
            self.lines += emitted[i][1]
            for j in after[i]:
                waiting[j] -= 1
                if not waiting[j]:
                    heapq.heappush(ready, (emitted[j][0], j))

    def stmt(self, node: ast.stmt) -> None:
        self.line = getattr(node, "lineno", self.line)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            self.put("DEF", f"ARGS{len(args.posonlyargs) + len(args.args)}", f"KW{len(args.kwonlyargs)}")
            for decorator in node.decorator_list:
                self.put("@")
                self.expr(decorator)
            for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
                self.expr(default)
            self.block(node.body)
            self.put("END")
        elif isinstance(node, ast.ClassDef):
            self.put("CLASS")
            for base in node.bases:
                self.expr(base)
            self.put_sorted(node.body)  # methods in any order
            self.put("END")
        elif isinstance(node, ast.Return):
            self.put("RETURN")
            if node.value is not None:
                self.expr(node.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if getattr(node, "value", None) is None:
                return
            for target in targets:
                self.expr(target)
            self.put("=")
            self.expr(node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.put("LOOP")
            self.expr(node.target)
            self.put("IN")
            self.expr(node.iter)
            self.block(node.body)
            self.put("END")
            if node.orelse:
                self.put("ELSE")
                self.block(node.orelse)
        elif isinstance(node, ast.While):
            self.put("WHILE")
            self.expr(node.test)
            self.block(node.body)
            self.put("END")
        elif isinstance(node, ast.If):
            test, body, orelse = node.test, node.body, node.orelse
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and orelse:
                test, body, orelse = test.operand, orelse, body
            self.put("IF")
            self.expr(test)
            self.block(body)
            if orelse:
                self.put("ELSE")
                self.block(orelse)
            self.put("END")
        elif isinstance(node, ast.Expr) and _is_accumulation(node.value):
            self.put("ACC")
            for arg in node.value.args:
                self.expr(arg)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            self.put("WITH")
            for item in node.items:
                self.expr(item.context_expr)
            self.block(node.body)
            self.put("END")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.put("IMPORT", *sorted(a.name for a in node.names))
        else:
            self.generic(node)

    # expressions
    def expr(self, node: ast.AST) -> None:
        self.line = getattr(node, "lineno", self.line)
        if isinstance(node, ast.Name):
            self.put(self.name(node.id))
        elif isinstance(node, ast.Attribute):
            dotted = self.dotted(node)
            if dotted:
                self.put(dotted)
            else:
                self.expr(node.value)
                self.put(HIDDEN if node.attr in self.attributes else "." + node.attr)
        elif isinstance(node, ast.Constant):
            self.put(_constant(node.value))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            self.put(_constant(-node.operand.value))
        elif isinstance(node, ast.BinOp):
            op = type(node.op).__name__
            if isinstance(node.op, _COMMUTATIVE):
                self.put("(", op)
                self.put_sorted(_flatten(node, type(node.op)))
                self.put(")")
            else:
                self.put("(", op)
                self.expr(node.left)
                self.expr(node.right)
                self.put(")")
        elif isinstance(node, ast.BoolOp):
            self.put("(", type(node.op).__name__)
            self.put_sorted(node.values)
            self.put(")")
        elif isinstance(node, ast.Compare):
            self.compare(node)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:
                self.put("LOOP")
                self.expr(generator.target)
                self.put("IN")
                self.expr(generator.iter)
                for condition in generator.ifs:
                    self.put("IF")
                    self.expr(condition)
            self.put("ACC")
            if isinstance(node, ast.DictComp):
                self.expr(node.key)
                self.expr(node.value)
            else:
                self.expr(node.elt)
            self.put(*["END"] * len(node.generators))
        elif isinstance(node, (ast.Tuple, ast.List)):
            self.put("SEQ")
            for element in node.elts:
                self.expr(element)
            self.put(")")
        elif isinstance(node, ast.Subscript):
            self.expr(node.value)
            self.put("[")
            self.expr(node.slice)
            self.put("]")
        elif isinstance(node, ast.Slice):
            self.put("SLICE")
            for part in (node.lower, node.upper, node.step):
                if part is None:
                    self.put("_")
                else:
                    self.expr(part)
        else:
            self.generic(node)

    def generic(self, node: ast.AST) -> None:
        self.put(type(node).__name__)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.stmt(child)
            elif isinstance(child, (ast.expr, ast.slice, ast.comprehension, ast.excepthandler, ast.arguments,
                                    ast.keyword, ast.withitem, ast.match_case, ast.pattern)):
                self.expr(child) if not isinstance(child, ast.excepthandler) else self.handler(child)

    def handler(self, node: ast.excepthandler) -> None:
        self.put("EXCEPT")
        if node.type is not None:
            self.expr(node.type)
        self.block(node.body)

    def name(self, name: str) -> str:
        if name in self.bound:
            return HIDDEN
        if name in self.aliases:
            return self.aliases[name]
        return name if name in _BUILTINS else HIDDEN

    def dotted(self, node: ast.Attribute) -> str | None:
        """`F.softmax` -> `torch.nn.functional.softmax` where the chain starts at an import."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id in self.bound or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id]] + parts[::-1])

    def compare(self, node: ast.Compare) -> None:
        left, ops, right = node.left, node.ops, node.comparators
        if len(ops) == 1 and type(ops[0]) in _SWAPPED:  # a > b -> b < a
            left, ops, right = right[0], [_SWAPPED[type(ops[0])]()], [left]
        if len(ops) == 1 and isinstance(ops[0], _SYMMETRIC):
            self.put("(", type(ops[0]).__name__)
            self.put_sorted([left, right[0]])
            self.put(")")
            return
        self.put("(")
        self.expr(left)
        for op, value in zip(ops, right):
            self.put(type(op).__name__)
            self.expr(value)
        self.put(")")

    def call(self, node: ast.Call) -> None:
        func, args = node.func, list(node.args)
        dotted = self.dotted(func) if isinstance(func, ast.Attribute) else None
        if dotted and dotted.startswith("torch.") and dotted.count(".") == 1 and args \
                and not isinstance(args[0], ast.Starred):
            # torch.round(x) and x.round() are one call
            self.put("CALL")
            self.expr(args.pop(0))
            self.put("." + dotted.split(".")[1])
        else:
            self.put("CALL")
            self.expr(func)
        for arg in args:
            self.expr(arg)
        for keyword in sorted(node.keywords, key=lambda k: k.arg or ""):
            self.put(f"{keyword.arg}=" if keyword.arg else "**")
            self.expr(keyword.value)
        self.put(")")


def _flatten(node: ast.BinOp, op: type) -> list[ast.expr]:
    """The operands of a chain of one commutative operator: (a + b) + c -> [a, b, c]."""
    out = []
    for side in (node.left, node.right):
        if isinstance(side, ast.BinOp) and isinstance(side.op, op):
            out += _flatten(side, op)
        else:
            out.append(side)
    return out


def _is_accumulation(value: ast.expr) -> bool:
    """`out.append(x)` in a loop is what `[x for ...]` writes."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("append", "add") and len(value.args) == 1 and not value.keywords)


def _constant(value) -> str:
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return f"C:{value!r}"
    if isinstance(value, (int, float)):
        return f"C:{float(value)!r}" if abs(value) < 2**53 else f"C:{value!r}"
    if isinstance(value, (str, bytes)) and len(value) > _MAX_STRING:
        return "S:" + hashlib.blake2b(repr(value).encode("utf-8", "backslashreplace"), digest_size=8).hexdigest()
    return f"S:{value!r}"


@dataclass
class _Effects:
    reads: set[str]
    writes: set[str]
    barrier: bool


def _effects(stmt: ast.stmt) -> _Effects:
    """What a statement reads and writes (a method that mutates, `x.append`, `w.copy_`, writes its object)."""
    reads, writes = set(), set()
    barrier = isinstance(stmt, _BARRIERS)
    for node in _walk(stmt):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            base = _base_name(node)
            if base:
                writes.add(base)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in _MUTATING or (method.endswith("_") and not method.startswith("_")):
                base = _base_name(node.func.value)
                if base:
                    writes.add(base)
        elif isinstance(node, (ast.Return, ast.Raise, ast.Break, ast.Continue, ast.Yield, ast.YieldFrom, ast.Await)):
            barrier = True
    return _Effects(reads, writes, barrier)


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _depends(first: _Effects, second: _Effects) -> bool:
    return (first.barrier or second.barrier or bool(first.writes & (second.reads | second.writes))
            or bool(first.reads & second.writes))
