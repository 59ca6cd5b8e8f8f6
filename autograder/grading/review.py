"""Code a TA should read by hand: what a submission's grading-time code does besides computing.

The sandbox contains a hostile submission and no verdict depends on it, but its tripwires (the checks for
forbidden library calls) live in the student's own process, where a deliberate attack on them could go
unseen in the scores. Graded code in this course never needs to reach into the interpreter, the file
system, other processes or the libraries' own code, so code that does is listed: read from the extracted
source in the trusted grader, shown in the TA's score table and on the feedback page. A flag changes no
points; it is a reason to read the notebook, not a verdict.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase

from autograder.grading.extraction import Extracted, dotted_name, imported_names

REVIEW = "For a TA to read: "  # how these lines start among a submission's load messages

_MODULES = {  # importing one of these at all
    "ctypes": "calls native code directly", "_ctypes": "calls native code directly", "cffi": "calls native code directly",
    "gc": "walks the interpreter's objects", "importlib": "imports modules anew", "builtins": "changes built-ins",
    "subprocess": "runs other programs", "pty": "runs other programs", "multiprocessing": "starts processes",
    "signal": "sends or catches signals", "socket": "opens network connections",
}
_DOTTED = {  # reaching one of these through an import (patterns)
    "sys._getframe": "reads other frames", "inspect.currentframe": "reads other frames",
    "inspect.stack": "reads other frames", "inspect.getouterframes": "reads other frames",
    "inspect.trace": "reads other frames", "inspect.getsource*": "reads other code's source",
    "inspect.getfile": "reads other code's source", "sys.settrace": "hooks the interpreter",
    "sys.setprofile": "hooks the interpreter", "threading.settrace": "hooks the interpreter",
    "sys.addaudithook": "hooks the interpreter", "sys.monitoring*": "hooks the interpreter",
    "sys.modules": "changes loaded modules", "sys.meta_path": "changes how modules load",
    "sys.exit": "ends the process", "os._exit": "ends the process", "os.kill*": "sends signals",
    "os.fork*": "starts processes", "os.system": "runs other programs", "os.popen": "runs other programs",
    "os.exec*": "runs other programs", "os.spawn*": "runs other programs", "os.walk": "lists files",
    "os.listdir": "lists files", "os.scandir": "lists files", "glob.*glob": "lists files",
    "os.readlink": "reads the file system", "os.open": "opens files", "os.fdopen": "opens files",
    "io.open": "opens files",
    "operator.attrgetter": "reaches attributes by computed names",
    "operator.methodcaller": "reaches attributes by computed names",
}
_ATTRIBUTES = {  # these names on any object, or as a string (`getattr(f, "__code__")`)
    "f_back": "reads other frames", "f_globals": "reads other frames", "f_locals": "reads other frames",
    "f_builtins": "reads other frames", "tb_frame": "reads other frames", "gi_frame": "reads other frames",
    "__code__": "reads or replaces code objects", "co_consts": "reads or replaces code objects",
    "co_code": "reads or replaces code objects", "__closure__": "reads closures", "cell_contents": "reads closures",
    "__globals__": "reads other functions' globals", "__builtins__": "changes built-ins",
    "__subclasses__": "walks the class hierarchy", "__wrapped__": "unwraps other code",
    "DisableTorchFunction": "switches torch's dispatch checks off",
    "_DisableTorchFunction": "switches torch's dispatch checks off",
    "_pop_mode_temporarily": "switches torch's dispatch checks off",
    "iterdir": "lists files", "rglob": "lists files", "glob": "lists files",
}
_CALLS = {"exec": "runs code built at run time", "eval": "runs code built at run time",
          "compile": "runs code built at run time", "__import__": "imports by a computed name",
          "breakpoint": "stops for a debugger", "open": "opens files", "globals": "reads namespaces directly",
          "vars": "reads namespaces directly", "locals": "reads namespaces directly"}
_BY_NAME = {"getattr", "setattr", "delattr", "hasattr"}
_COMPARISONS = {"__eq__", "__ne__", "__bool__", "__torch_function__", "__torch_dispatch__", "__instancecheck__"}


def review_notes(code: Extracted) -> list[str]:
    """One line per place in the code that runs at grading time where it does what graded code never needs."""
    notes: dict[tuple, str] = {}
    bodies = [(cell, [ast.parse(cell.source).body[i] for i in cell.keep]) for cell in code.cells]
    own = {node.name for _, kept in bodies for node in kept if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for cell, kept in bodies:
        imported = imported_names(n for top in kept for n in ast.walk(top) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for top in kept:
            found = [(top, f) for f in _on_load(top, own)]
            found += [(node, f) for node in ast.walk(top) for f in _findings(node, imported)]
            for node, (what, why) in found:
                notes.setdefault((cell.number, node.lineno, what),
                                 f"{REVIEW}cell {cell.number}, line {node.lineno}: {what} ({why})")
    return [notes[key] for key in sorted(notes)]


def _on_load(top: ast.stmt, own: set[str]):
    """An UPPER_CASE constant runs when the notebook loads: one that calls the notebook's own code runs
    whatever that code does before any test (and before any check of a test) starts."""
    if isinstance(top, (ast.Assign, ast.AnnAssign)) and top.value is not None:
        called = sorted({n.func.id for n in ast.walk(top.value) if isinstance(n, ast.Call)
                         and isinstance(n.func, ast.Name) and n.func.id in own})
        if called:
            yield f"a constant calls `{called[0]}` while the notebook loads", "runs the notebook's own code before any test"


def _resolved(node: ast.AST, imported: dict[str, str]) -> str | None:
    """The dotted path `node` names through the notebook's imports (`np.linalg` -> `numpy.linalg`)."""
    parts = dotted_name(node)
    if parts is None or parts[0] not in imported:
        return None
    return ".".join([imported[parts[0]], *parts[1:]])


def _findings(node: ast.AST, imported: dict[str, str]):
    """(what, why) for one syntax node."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for module in modules:
            if module.split(".")[0] in _MODULES:
                yield f"imports `{module}`", _MODULES[module.split(".")[0]]
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield from _dotted_findings(f"{node.module}.{alias.name}")
    elif isinstance(node, (ast.Attribute, ast.Name)):
        path = _resolved(node, imported)
        if path is not None and not isinstance(getattr(node, "ctx", None), ast.Store):
            yield from _dotted_findings(path)
        if isinstance(node, ast.Attribute) and node.attr in _ATTRIBUTES:
            yield f"uses `.{node.attr}`", _ATTRIBUTES[node.attr]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _ATTRIBUTES:
        yield f"names `{node.value}`", _ATTRIBUTES[node.value]
    # a built-in called by name (`getattr`, `exec`), not something the notebook imported under that name
    builtin = (node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id not in imported else None)
    if builtin in _CALLS:
        yield f"calls `{builtin}`", _CALLS[builtin]
    if builtin in _BY_NAME and len(node.args) > 1:
        owner, name = node.args[0], node.args[1]
        library = _resolved(owner, imported)
        if not isinstance(name, ast.Constant) and not (isinstance(owner, ast.Name) and owner.id == "self"):
            yield f"calls `{builtin}` with a computed name", "reaches attributes it does not name"
        elif isinstance(name, ast.Constant) and isinstance(name.value, str) and library:
            yield from _dotted_findings(f"{library}.{name.value}")
        if builtin in ("setattr", "delattr") and library:
            yield f"{builtin} on `{library}`", "changes a library's code or settings"
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for target in targets:
            path = _resolved(target, imported) if isinstance(target, ast.Attribute) else None
            if path is not None:
                yield f"assigns `{path}`", "changes a library's code or settings"
    if isinstance(node, ast.ClassDef):
        bases = [_resolved(b, imported) or ".".join(dotted_name(b) or []) for b in node.bases]
        if any(base in ("torch.Tensor", "torch.nn.Parameter") for base in bases):
            yield f"class `{node.name}` subclasses `torch.Tensor`", "its objects can answer comparisons as they like"
        redefined = sorted(item.name for item in node.body
                           if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in _COMPARISONS)
        redefined += sorted(t.id for item in node.body if isinstance(item, ast.Assign)
                            for t in item.targets if isinstance(t, ast.Name) and t.id in _COMPARISONS)
        if redefined:
            yield (f"class `{node.name}` defines {', '.join(f'`{n}`' for n in redefined)}",
                   "its objects can answer comparisons as they like")


def _dotted_findings(path: str):
    for pattern, why in _DOTTED.items():
        if fnmatchcase(path, pattern) or path.startswith(pattern + "."):
            yield f"uses `{path}`", why
            return
