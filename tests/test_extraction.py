"""Extraction: which statements of a submission notebook run at grading time, and readable format errors."""

from __future__ import annotations

import ast

import nbformat
import pytest
from conftest import write_notebook

from autograder.extraction import SubmissionFormatError, extract

NEW = nbformat.v4.new_code_cell


def kept(extracted) -> list[str]:
    """The source of every statement that will run, in order."""
    out = []
    for cell in extracted.cells:
        body = ast.parse(cell.source).body
        out += [ast.get_source_segment(cell.source, body[i]) for i in cell.keep]
    return out


@pytest.fixture
def notebook(tmp_path):
    """Write cells (code strings or nbformat cells) to a notebook and return its path."""

    def make(*cells, name="submission.ipynb"):
        return write_notebook(tmp_path / name, [NEW(c) if isinstance(c, str) else c for c in cells])

    return make


def test_default_mode_keeps_definitions_and_drops_experiments(notebook):
    path = notebook(
        "import torch\nfrom transformers import AutoModel\nimport numpy as np",
        "MAX_LEN = 128\nTEMPERATURE: float = 0.7\nlr = 3e-4\nmodel = AutoModel.from_pretrained('gpt2')",
        "def top_k(logits, k):\n    return logits.topk(k)\n\nprint(top_k(torch.ones(3), 1))\ntop_k(torch.ones(3), 2)",
        "class Sampler:\n    pass\n\nasync def fetch():\n    pass\nfor i in range(3):\n    x = i\nwith open('f') as f:\n    pass",
        "s = Sampler()\nassert s is not None\nmodel.eval()",
    )
    assert kept(extract(path)) == [
        "import torch", "from transformers import AutoModel", "import numpy as np",
        "MAX_LEN = 128", "TEMPERATURE: float = 0.7",
        "def top_k(logits, k):\n    return logits.topk(k)",
        "class Sampler:\n    pass", "async def fetch():\n    pass",
    ]


def test_cells_without_kept_statements_are_omitted_and_numbered_as_in_the_notebook(notebook):
    path = notebook(nbformat.v4.new_markdown_cell("# Intro"), "x = 1", "def f():\n    pass")
    assert [(c.number, c.filename) for c in extract(path).cells] == [(3, "<cell 3>")]


@pytest.mark.parametrize("mode, expected", [("definitions", ["def f():\n    pass"]),
                                            ("cells", ["x = 1", "def f():\n    pass", "print(x)"])])
def test_modes(notebook, mode, expected):
    path = notebook("from public_checks import check\nx = 1\ndef f():\n    pass\nprint(x)")
    assert kept(extract(path, mode=mode)) == expected


def test_ipython_lines_are_neutralised_without_shifting_lines(notebook):
    source = "!pip install transformers\n%timeit sum(range(9))\nimport torch\n\ndef late():\n    %time x = 1\n    return 2\n"
    cell = extract(notebook(source)).cells[0]
    body = ast.parse(cell.source).body
    assert [(type(body[i]).__name__, body[i].lineno) for i in cell.keep] == [("Import", 3), ("FunctionDef", 5)]
    assert cell.source.splitlines()[0].startswith("pass")
    assert cell.source.splitlines()[5] == "    pass  # time x = 1"
    namespace = {}
    exec(compile(ast.Module([body[i] for i in cell.keep], []), cell.filename, "exec"), namespace)
    assert namespace["late"]() == 2


def test_lines_inside_strings_are_not_treated_as_ipython(notebook):
    source = 'TEMPLATE = """Question: %(q)s\n%(a)s\n!important"""\n'
    namespace = {}
    exec(extract(notebook(source)).cells[0].source, namespace)
    assert namespace["TEMPLATE"] == "Question: %(q)s\n%(a)s\n!important"


@pytest.mark.parametrize("magic", ["%%time", "%%capture out", "  %%writefile helpers.py"])
def test_cell_magics_are_skipped_with_a_warning(notebook, magic):
    name = magic.split()[0]
    extracted = extract(notebook("def before():\n    pass", f"{magic}\ndef inside():\n    pass"))
    assert extracted.defined_names() == {"before"}
    assert extracted.warnings == (f"cell 2: a cell magic ({name}) is not run when grading",)


def test_syntax_error_names_cell_and_line_and_the_rest_is_extracted(notebook):
    extracted = extract(notebook("def ok():\n    pass", "x = 1\ndef broken(:\n    pass", "def also_ok():\n    pass"))
    assert extracted.defined_names() == {"ok", "also_ok"}
    assert len(extracted.warnings) == 1
    assert extracted.warnings[0].startswith("cell 2: syntax error at line 2: ")
    assert extracted.warnings[0].endswith("; this cell was skipped")


def test_nbgrader_test_cells_are_skipped(notebook, cells):
    path = notebook(
        cells.answer("top_k", "def top_k():\n    pass"),
        cells.test("check_top_k", "def hidden_helper():\n    pass\ncheck('top_k')"),
        cells.readonly("given", "def given():\n    pass"),
    )
    assert extract(path, mode="cells").defined_names() == {"top_k", "given"}


def test_source_stored_as_a_list_of_lines(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[NEW("")])
    nb.cells[0].source = ["import math\n", "def f():\n", "    return math.pi\n"]
    path = tmp_path / "lines.ipynb"
    nbformat.write(nb, path)
    assert kept(extract(path)) == ["import math", "def f():\n    return math.pi"]


def test_defined_names(notebook):
    path = notebook("import torch\nfrom math import pi\nA = B = 1\nC: int = 2\nD: int",
                    "def f():\n    pass\nclass K:\n    pass\nasync def g():\n    pass\nlower = 3")
    assert extract(path).defined_names() == {"A", "B", "C", "f", "K", "g"}


# --- reading the file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"cells": [', "bad.ipynb is not valid notebook JSON (was it saved completely?)"),
        (b"", "bad.ipynb is not valid notebook JSON"),
        (b'{"hello": "world"}', "bad.ipynb could not be read as a notebook"),
        (b"[1, 2, 3]", "bad.ipynb could not be read as a notebook"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}', "bad.ipynb"),
        ("{\"cells\": []}  # caf\u00e9".encode("latin-1"), "bad.ipynb is not UTF-8 text, so not a notebook"),
    ],
    ids=["truncated", "empty", "not-a-notebook", "json-list", "cells-not-a-list", "latin-1"],
)
def test_unreadable_notebooks_raise_format_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionFormatError) as info:
        extract(path)
    assert str(info.value).startswith(message)
