"""The package's layout is its architecture: each stage imports only the stages below it, no file imports
itself back through others, and the public import paths of notebooks and suites keep working."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import autograder

PACKAGE = Path(autograder.__file__).parent
# Stage of each subpackage, lowest first; siblings of one rank never import each other. A new subpackage
# gets its rank here, and docs/architecture.md says where it sits.
RANKS = {"course": 0, "grading": 1, "exports": 2, "student": 2, "authoring": 3, "similarity": 4, "web": 4, "cli": 5}
PUBLIC = {"zoo": "grading", "testing": "grading", "checks": "student", "validate": "student"}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module of the package that this file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def _graph(root: Path) -> dict[str, set[str]]:
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def _stage(module: str) -> str | None:
    """The subpackage (or `cli`) a module belongs to; None for the package itself and its public paths."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in PUBLIC:
        return None
    return parts[1]


def layout_problems(root: Path) -> list[str]:
    """Upward or sideways imports between stages, imports of the public paths from inside the package,
    stages without a rank, and import cycles between files."""
    graph = _graph(root)
    problems = [f"{module}: a stage without a rank in RANKS" for module in graph
                if _stage(module) and _stage(module) not in RANKS]
    for module, targets in sorted(graph.items()):
        here = _stage(module)
        for target in sorted(targets):
            there = _stage(target)
            if target.split(".")[-1] in PUBLIC and target.count(".") == 1:
                problems.append(f"{module} imports {target}: inside the package, import its home instead")
            elif here in RANKS and there in RANKS and here != there and RANKS[there] >= RANKS[here]:
                problems.append(f"{module} ({here}) imports {target} ({there}), a stage not below it")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_each_stage_imports_only_stages_below_it_and_no_file_imports_itself_back():
    assert layout_problems(PACKAGE) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "autograder"
    for name, source in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def test_the_layout_check_finds_upward_sideways_and_circular_imports(tmp_path):
    root = _tree(tmp_path, {
        "course/__init__.py": "", "course/gradebook.py": "from autograder.grading.oracle import run\n",
        "grading/__init__.py": "", "grading/oracle.py": "def run():\n    from autograder.exports import grades\n",
        "exports/__init__.py": "", "exports/grades.py": "import autograder.student.pack\n",
        "student/__init__.py": "", "student/pack.py": "from autograder import zoo\n",
        "zoo.py": "", "reports/__init__.py": "", "reports/app.py": "",
        "grading/a.py": "from autograder.grading import b\n", "grading/b.py": "from autograder.grading.a import x\n",
    })
    problems = layout_problems(root)
    assert "autograder.course.gradebook (course) imports autograder.grading.oracle (grading), a stage not below it" \
        in problems
    assert any(p.startswith("autograder.grading.oracle (grading) imports autograder.exports.grades") for p in problems)
    assert any(p.startswith("autograder.exports.grades (exports) imports autograder.student.pack") for p in problems)
    assert "autograder.student.pack imports autograder.zoo: inside the package, import its home instead" in problems
    assert "autograder.reports.app: a stage without a rank in RANKS" in problems
    assert "import cycle: autograder.grading.a -> autograder.grading.b -> autograder.grading.a" in problems


def test_the_layout_check_accepts_downward_imports(tmp_path):
    root = _tree(tmp_path, {
        "course/__init__.py": "", "course/config.py": "", "grading/__init__.py": "",
        "grading/oracle.py": "from autograder.course.config import Course\nfrom autograder.course import config\n",
        "cli.py": "def main():\n    from autograder.grading import oracle\n",
    })
    assert layout_problems(root) == []


@pytest.mark.parametrize("name, stage", sorted(PUBLIC.items()))
def test_public_import_paths_are_the_modules_themselves(name, stage):
    public = importlib.import_module(f"autograder.{name}")
    assert public is importlib.import_module(f"autograder.{stage}.{name}")
    namespace: dict = {}
    exec(f"from autograder import {name} as m", namespace)  # the form notebooks and suites use
    assert namespace["m"] is public
