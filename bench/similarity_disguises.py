"""The disguises a team uses to hide copied code, made programmatically on Python source.

Each takes code and a seeded `random.Random` and returns code that does the same (or, for dead code,
more): renamed identifiers, other comments and layout, reordered independent statements, inserted
dead code, `for` loops as `while` loops, loops as comprehensions and back, expressions split into
temporaries and temporaries merged back. They are written apart from the similarity normaliser, on
purpose: the bench must not test the normaliser with its own rules.
"""

from __future__ import annotations

import ast
import builtins
import copy
import random

_WORDS = ["value", "tmp", "result", "data", "item", "acc", "buf", "cur", "arr", "res", "out", "val", "thing",
          "stuff", "my", "the", "new", "final", "local", "work"]
_PHRASES = ["compute it here", "TODO check this", "main step", "helper value", "as in the lecture",
            "see slides", "important!", "this took a while", "fixed the bug", "edge case", "works now"]
_BUILTINS = set(dir(builtins))


def _parse(code: str) -> ast.Module:
    return ast.parse(code)


def _function_bodies(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _blocks(tree: ast.AST):
    for node in ast.walk(tree):
        for part in ("body", "orelse"):
            block = getattr(node, part, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt) and not isinstance(node, ast.Module):
                yield node, part, block


def rename(code: str, rng: random.Random, keep: set[str]) -> str:
    """Every variable and helper the team named gets another name (graded names and parameters stay)."""
    tree = _parse(code)
    imported = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    params = {a.arg for n in ast.walk(tree) if isinstance(n, ast.arg) for a in [n]}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names -= keep | imported | _BUILTINS | params | {"self"}
    mapping = {}
    for name in sorted(names):
        new = name
        while new == name or new in mapping.values() or new in keep:
            new = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}{rng.randint(0, 99)}"
        mapping[name] = new.upper() if name.isupper() else new
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in mapping:
            node.name = mapping[node.name]
    return ast.unparse(tree)


def comments(code: str, rng: random.Random, keep: set[str]) -> str:
    """Comments and docstrings replaced by others, layout as `ast.unparse` writes it, blank lines moved."""
    tree = _parse(code)
    for node in _function_bodies(tree):
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            node.body[0].value.value = rng.choice(_PHRASES)
    out = []
    for line in ast.unparse(tree).splitlines():
        stripped = line.lstrip()
        indent = line[:len(line) - len(stripped)]
        if stripped and not stripped.startswith(("else", "elif", "except", "finally", "@", '"')) and rng.random() < 0.3:
            out.append(f"{indent}# {rng.choice(_PHRASES)}")
        out.append(line)
        if rng.random() < 0.1:
            out.append("")
    return "\n".join(out) + "\n"


def _effects(stmt: ast.stmt) -> tuple[set[str], set[str], bool]:
    reads, writes, control = set(), set(), isinstance(stmt, (ast.Return, ast.Raise, ast.Break, ast.Continue))
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            base = node
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                writes.add(base.id)
        elif isinstance(node, ast.Call):
            control = control or (isinstance(node.func, ast.Attribute) and (
                node.func.attr.endswith("_") or node.func.attr in ("append", "extend", "add", "update")))
        elif isinstance(node, (ast.Return, ast.Raise, ast.Yield)):
            control = True
    return reads, writes, control


def _independent(a: ast.stmt, b: ast.stmt) -> bool:
    ra, wa, ca = _effects(a)
    rb, wb, cb = _effects(b)
    return not (ca or cb or wa & (rb | wb) or ra & wb)


def reorder(code: str, rng: random.Random, keep: set[str]) -> str:
    """Adjacent independent statements swapped (bubble passes, so a statement can travel far)."""
    tree = _parse(code)
    for _, _, block in _blocks(tree):
        for _ in range(3):
            for i in range(len(block) - 1):
                if _independent(block[i], block[i + 1]) and rng.random() < 0.7:
                    block[i], block[i + 1] = block[i + 1], block[i]
    return ast.unparse(tree)


def dead_code(code: str, rng: random.Random, keep: set[str]) -> str:
    """Statements that change nothing: unused variables, `if False:` blocks, debugging prints, `pass`."""
    tree = _parse(code)
    for function in list(_function_bodies(tree)):
        params = [a.arg for a in function.args.args if a.arg != "self"] or ["None"]  # e.g. a method of self only
        for _ in range(rng.randint(2, 4)):
            p = rng.choice(params)
            junk = rng.choice([
                f"unused_{rng.randint(0, 999)} = {rng.randint(2, 999)} * {rng.random():.3f}",
                f"debug_{rng.randint(0, 999)} = str({p})",
                f"if False:\n    {p if p != 'None' else 'unused'} = None",
                f"print('step', {rng.randint(0, 9)})",
                "pass",
                f"check_{rng.randint(0, 999)} = [{p}, {p}]",
            ])
            position = rng.randint(0, max(0, len(function.body) - 1))
            function.body[position:position] = ast.parse(junk).body
    return ast.unparse(tree)


def for_to_while(code: str, rng: random.Random, keep: set[str]) -> str:
    """`for i in range(a, b):` -> a counter and a `while`; `for x in xs:` -> an index loop."""
    tree = _parse(code)
    for parent, part, block in list(_blocks(tree)):
        new_block = []
        for stmt in block:
            if isinstance(stmt, ast.For) and not stmt.orelse and isinstance(stmt.target, ast.Name) \
                    and not any(isinstance(n, ast.Continue) for n in ast.walk(stmt)):
                counter = stmt.target.id
                it = stmt.iter
                if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" \
                        and len(it.args) in (1, 2) and not it.keywords:
                    start = ast.unparse(it.args[0]) if len(it.args) == 2 else "0"
                    stop = ast.unparse(it.args[-1])
                    head = ast.parse(f"{counter} = {start}\nwhile {counter} < {stop}:\n    pass").body
                    head[1].body = stmt.body + ast.parse(f"{counter} += 1").body
                else:
                    index = f"i_{rng.randint(0, 999)}"
                    seq = f"seq_{rng.randint(0, 999)}"
                    head = ast.parse(f"{seq} = list({ast.unparse(it)})\n{index} = 0\n"
                                     f"while {index} < len({seq}):\n    {ast.unparse(stmt.target)} = {seq}[{index}]").body
                    head[2].body = head[2].body + stmt.body + ast.parse(f"{index} += 1").body
                new_block += head
            else:
                new_block.append(stmt)
        setattr(parent, part, new_block)
    return ast.unparse(tree)


def _append_loop(stmt: ast.stmt) -> tuple[str, ast.expr] | None:
    if isinstance(stmt, ast.For) and len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Expr):
        call = stmt.body[0].value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append" \
                and isinstance(call.func.value, ast.Name) and len(call.args) == 1:
            return call.func.value.id, call.args[0]
    return None


def loops_and_comprehensions(code: str, rng: random.Random, keep: set[str]) -> str:
    """`out = []` + an `append` loop -> a list comprehension, and list comprehensions -> `append` loops."""
    tree = _parse(code)
    for parent, part, block in list(_blocks(tree)):
        new_block: list[ast.stmt] = []
        for stmt in block:
            found = _append_loop(stmt)
            previous = new_block[-1] if new_block else None
            if found and isinstance(previous, ast.Assign) and len(previous.targets) == 1 \
                    and isinstance(previous.targets[0], ast.Name) and previous.targets[0].id == found[0] \
                    and isinstance(previous.value, ast.List) and not previous.value.elts:
                new_block[-1] = ast.parse(f"{found[0]} = [{ast.unparse(found[1])} for {ast.unparse(stmt.target)} "
                                          f"in {ast.unparse(stmt.iter)}]").body[0]
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and isinstance(stmt.value, ast.ListComp) and len(stmt.value.generators) == 1:
                name, comp = stmt.targets[0].id, stmt.value
                generator = comp.generators[0]
                body = f"{name}.append({ast.unparse(comp.elt)})"
                for condition in generator.ifs:
                    body = f"if {ast.unparse(condition)}:\n        {body}"
                new_block += ast.parse(f"{name} = []\nfor {ast.unparse(generator.target)} in "
                                       f"{ast.unparse(generator.iter)}:\n    {body}").body
            else:
                new_block.append(stmt)
        setattr(parent, part, new_block)
    return ast.unparse(tree)


def _nested_call(value: ast.expr) -> ast.expr | None:
    """A call or arithmetic inside `value` worth its own temporary."""
    for node in ast.walk(value):
        if node is not value and isinstance(node, (ast.Call, ast.BinOp)) \
                and sum(1 for n in ast.walk(node) if isinstance(n, (ast.Call, ast.BinOp))) >= 2:
            return node
    return None


def split_and_merge(code: str, rng: random.Random, keep: set[str]) -> str:
    """Long expressions split into temporaries; a temporary read once right after it is set merged back."""
    tree = _parse(code)
    for function in list(_function_bodies(tree)):
        for parent, part, block in list(_blocks(function)):
            new_block: list[ast.stmt] = []
            for stmt in block:
                previous = new_block[-1] if new_block else None
                if isinstance(previous, ast.Assign) and len(previous.targets) == 1 \
                        and isinstance(previous.targets[0], ast.Name) and rng.random() < 0.5:
                    name = previous.targets[0].id
                    uses = [n for n in ast.walk(function) if isinstance(n, ast.Name) and n.id == name]
                    here = [n for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id == name
                            and isinstance(n.ctx, ast.Load)]
                    if len(uses) == 2 and len(here) == 1:
                        here[0].id = f"({ast.unparse(previous.value)})"
                        new_block[-1] = ast.parse(ast.unparse(stmt)).body[0]
                        continue
                value = getattr(stmt, "value", None)
                inner = _nested_call(value) if isinstance(stmt, (ast.Assign, ast.Return)) and value is not None else None
                if inner is not None:
                    temp = f"{rng.choice(_WORDS)}_{rng.randint(0, 999)}"
                    source = ast.unparse(inner)
                    replaced = ast.unparse(stmt).replace(source, temp, 1)
                    new_block += ast.parse(f"{temp} = {source}\n{replaced}").body
                    continue
                new_block.append(stmt)
            setattr(parent, part, new_block)
    return ast.unparse(tree)


DISGUISES = {
    "renamed identifiers": [rename],
    "comments and layout": [comments],
    "reordered statements": [reorder],
    "dead code inserted": [dead_code],
    "for -> while": [for_to_while],
    "loop <-> comprehension": [loops_and_comprehensions],
    "split / merged expressions": [split_and_merge],
    "all combined": [split_and_merge, loops_and_comprehensions, for_to_while, reorder, dead_code, rename, comments],
}


def disguise(code: str, steps, seed: int, keep: set[str]) -> str:
    rng = random.Random(seed)
    for step in steps:
        code = step(code, rng, keep)
    return code


def copy_function(code: str, donor: str, name: str) -> str:
    """`code` with its definition of `name` replaced by the donor's, with the donor's imports and the
    donor's helpers and constants it uses that the team lacks (what a team copies to make the function
    run); the rest stays the team's own."""
    tree, other = _parse(code), _parse(donor)
    own = {getattr(n, "name", None) for n in tree.body}  # the team's own (graded functions among them)
    defined = {target.id if isinstance(target, ast.Name) else None: n for n in other.body
               for target in ([ast.Name(n.name)] if hasattr(n, "name") else getattr(n, "targets", []))}
    needed, pending = [], [name]
    while pending:
        node = defined[pending.pop()]
        if node in needed:
            continue
        needed.append(node)
        pending += [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defined and n.id not in own]
    given, helpers = needed[0], needed[1:]
    imports = [n for n in other.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    body = [copy.deepcopy(given) if getattr(n, "name", None) == name else n for n in tree.body]
    tree.body = imports + [copy.deepcopy(h) for h in sorted(helpers, key=other.body.index)] + body
    return ast.unparse(tree)
