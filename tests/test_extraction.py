"""Extraction: which statements of a submission notebook run at grading time, and readable format errors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook

from autograder.grading import extraction
from autograder.grading.extraction import SubmissionFormatError, extract

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


def test_a_cell_magic_is_named_briefly_however_long_its_line(notebook):
    assert extract(notebook("%%" + "x" * 10_000)).warnings == (
        f"cell 1: a cell magic (%%{'x' * 38}) is not run when grading",)


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


def test_ipython_neutralising_keeps_line_separators_python_does_not_count(notebook):
    """str.splitlines also splits at U+2028 and form feeds; rejoining by it changed string literals."""
    namespace = {}
    exec(extract(notebook('!ls\nTEXT = "a\u2028b\x0cc"')).cells[0].source, namespace)
    assert namespace["TEXT"] == "a\u2028b\x0cc"


# --- definitions that do not run at grading time --------------------------------------------------


RUNS = "does not run when grading (only top-level imports, `def`, `class` and UPPER_CASE constants do)"


@pytest.mark.parametrize(
    "source, hint",
    [
        ("if True:\n    def top_k(x):\n        return x",
         f"cell 1, line 2: `top_k`, defined inside the `if` block of line 1, {RUNS}: move `def top_k` out of the "
         "block, to the top level of a cell (no indentation)"),
        ("try:\n    import fast\nexcept ImportError:\n    with open('x'):\n        class Sampler:\n            pass",
         f"cell 1, line 5: `Sampler`, defined inside the `try` block of line 1, {RUNS}: move `class Sampler` out of "
         "the block, to the top level of a cell (no indentation)"),
        ("def my_top_k(x):\n    return x\ntop_k = my_top_k",
         f"cell 1, line 3: `top_k = my_top_k` {RUNS}: write `def top_k(...):` at the top level of a cell instead"),
        ("top_k = lambda x: x",
         f"cell 1, line 1: `top_k = lambda x: x` {RUNS}: write `def top_k(...):` at the top level of a cell instead"),
    ],
    ids=["if-true", "nested-in-try", "alias", "lambda"],
)
def test_definitions_that_do_not_run_are_named_with_how_to_write_them(notebook, source, hint):
    extracted = extract(notebook(source))
    assert "top_k" not in extracted.defined_names() and "Sampler" not in extracted.defined_names()
    assert extracted.warnings == (hint,)


def test_no_hint_where_the_name_runs_elsewhere_or_is_plain_data(notebook):
    path = notebook("def top_k(x):\n    return x", "if DEBUG:\n    def top_k(x):\n        return None",
                    "logits = torch.ones(3)\nscores = logits\ndevice = 'cpu'")
    assert extract(path).warnings == ()
    assert extract(notebook("if True:\n    def f():\n        pass"), mode="cells").warnings == ()


# --- cells that cannot run -----------------------------------------------------------------------


def _raw_notebook(tmp_path, cells) -> Path:
    path = tmp_path / "raw.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}))
    return path


def _code(source, **cell):
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], **cell}


@pytest.mark.parametrize(
    "cell, warning",
    [
        ([1, 2], 'it is not a notebook cell (a JSON object with "cell_type" and "source")'),
        ({"cell_type": "python", "source": "x = 1"}, 'its "cell_type" is not "code", "markdown" or "raw"'),
        (_code(3), 'its "source" is not text (a string or a list of strings)'),
        (_code(["import os\n", None]), 'its "source" is not text (a string or a list of strings)'),
        (_code("import os\nNAME = '\ud800'"),
         "line 2 holds a broken character (half of one, \\ud800), which Python cannot read: delete or retype it"),
        (_code("import os\r\nNAME = 'a\x00'"), "line 2 holds a NUL character, which Python cannot read: delete or retype it"),
        (_code("VALUE = " + "-" * 100_000 + "1"),
         "it is nested too deeply for Python to read: split long expressions into several statements"),
        (_code("VALUE = 1" + "+1" * 200_000),
         "it is nested too deeply for Python to read: split long expressions into several statements"),
        (_code("x = 1\ndef broken(:\n    pass"), "syntax error at line 2: invalid syntax"),
    ],
    ids=["not-an-object", "unknown-type", "source-a-number", "source-list-with-null", "lone-surrogate", "nul",
         "deep-unary", "deep-sum", "syntax-error"],
)
def test_a_cell_that_cannot_run_is_a_warning_and_the_others_still_run(tmp_path, cell, warning):
    extracted = extract(_raw_notebook(tmp_path, [cell, _code("def ok():\n    pass")]))
    assert extracted.defined_names() == {"ok"}
    assert extracted.warnings == (f"cell 1: {warning}; this cell was skipped",)


@pytest.mark.parametrize("metadata", [[1], "nbgrader", {"nbgrader": [1]}, {"nbgrader": {"grade": "yes"}},
                                      {"nbgrader": {"grade": 1}}, {"nbgrader": {"grade": True, "solution": True}}])
def test_odd_metadata_is_an_ordinary_answer_cell(tmp_path, metadata):
    """Only a cell that nbgrader marks as a test (grade true, solution not true) is left out."""
    extracted = extract(_raw_notebook(tmp_path, [_code("def f():\n    pass", metadata=metadata)]))
    assert extracted.defined_names() == {"f"} and extracted.warnings == ()


def test_code_beyond_the_notebook_budget_is_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(extraction, "MAX_CODE_CHARS", 100)
    extracted = extract(_raw_notebook(tmp_path, [_code("def a():\n    pass"), _code("B = 1\n" * 30), _code("C = 2")]))
    assert extracted.defined_names() == {"a", "C"}
    assert extracted.warnings == ("cell 2: the notebook holds more code than the grader reads (100 characters): keep "
                                  "data in files, not in code cells; this cell was skipped",)


def test_a_failure_of_the_grader_on_odd_input_is_a_format_error_with_a_neutral_message(notebook, monkeypatch):
    def bug(cell):
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(extraction, "_code_of", bug)
    with pytest.raises(SubmissionFormatError) as info:
        extract(notebook("x = 1"))
    assert str(info.value) == ("the grader could not read submission.ipynb: a fault of the grader's own code, not "
                               "of the hand-in; please tell the course staff")
    assert isinstance(info.value.__cause__, AttributeError)  # kept for the staff, never shown to the student


# --- reading the file ----------------------------------------------------------------------------


RESAVE = "hand in the notebook as Jupyter saves it (open it in Jupyter and save it again)"
SHAPE = 'a notebook is the JSON object Jupyter saves, with a list of "cells"'


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"cells": [{"cell_type": "code", "source": "x = 1',
         "is cut off: its JSON ends in the middle (line 1); hand in the complete file (was it saved or uploaded "
         "completely?)"),
        (b'{"cells": [', "is cut off: its JSON ends in the middle (line 1)"),
        (b'{"cells": [],\n "metadata": {"trusted": tr', "is cut off: its JSON ends in the middle (line 2)"),
        ('{"cells": [],\n "metadata": {"author": "caf\u00e9'.encode()[:-1], "is cut off: its JSON ends in the middle (line 2)"),
        (b"", "is empty: save the notebook in Jupyter before handing it in"),
        (b'{ not json', "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 3)"),
        (b'{"cells": [],}', "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 14)"),
        (b'{"cells": [1 2]}', f"is not valid JSON (Expecting ',' delimiter at line 1, column 14), as if it was "
                              f"edited as text; {RESAVE}"),
        (b'{"cells": []}\n{"cells": []}', f"has more text after the end of the notebook (from line 2, column 1); {RESAVE}"),
        (b'{"hello": "world"}', f'is JSON but not a notebook: it has no "cells"; {SHAPE}'),
        (b"[1, 2, 3]", f"holds a JSON list, not a notebook; {SHAPE}"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}',
         f'is JSON but not a notebook: it has "cells" that are a number, not a list; {SHAPE}'),
        (b"[" * 100_000 + b"]" * 100_000, f"is JSON nested too deeply to be a notebook; {SHAPE}"),
        (b'{"nbformat": 5, "cells": []}', f"says it is in notebook format 5, the grader reads format 4 (what Jupyter "
                                          f"saves); {RESAVE}"),
        (b'{"nbformat": "4", "cells": []}', "says it is in notebook format '4', the grader reads format 4"),
        (b'{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [[1]]}',
         f"is an old notebook (format 3) that could not be converted; {RESAVE}"),
        ('{"cells": [], "author": "caf\u00e9"}'.encode("latin-1"),
         f"is not UTF-8 text (byte 0xe9 on line 1), so another program re-encoded it; {RESAVE}"),
        ('{"cells": []}'.encode("utf-16"), f"is saved as UTF-16 or UTF-32 text, not UTF-8; {RESAVE}"),
        ('{"cells": []}'.encode("utf-16-le"), f"is saved as UTF-16 or UTF-32 text, not UTF-8; {RESAVE}"),
    ],
    ids=["truncated-in-a-string", "truncated", "truncated-in-a-literal", "truncated-in-a-character", "empty", "not-json",
         "trailing-comma", "invalid-json", "two-notebooks", "not-a-notebook",
         "json-list", "cells-not-a-list", "nested-json", "format-5", "format-a-string", "broken-format-3",
         "latin-1", "utf-16", "utf-16-without-bom"],
)
def test_unreadable_notebooks_raise_format_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionFormatError) as info:
        extract(path)
    assert str(info.value).startswith(f"bad.ipynb {message}")


def test_an_old_notebook_is_converted_and_a_byte_order_mark_is_accepted(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [
        {"cells": [{"cell_type": "code", "input": "def f():\n    pass", "language": "python", "outputs": []}]}]}
    (tmp_path / "v3.ipynb").write_text(json.dumps(v3))
    assert extract(tmp_path / "v3.ipynb").defined_names() == {"f"}
    (tmp_path / "bom.ipynb").write_bytes(json.dumps({"cells": [_code("def g():\n    pass")]}).encode("utf-8-sig"))
    assert extract(tmp_path / "bom.ipynb").defined_names() == {"g"}


def test_metadata_the_grader_does_not_use_may_be_anything_jupyter_could_write(tmp_path):
    huge = "9" * 5000  # beyond Python's int-from-text limit of 4,300 digits
    cell = {"cell_type": "code", "execution_count": 0, "metadata": {}, "source": "def f():\n    return 1",
            "outputs": [{"output_type": "execute_result", "execution_count": 0, "data": {}, "metadata": {}}]}
    text = json.dumps({"nbformat": 4.0, "nbformat_minor": 0, "metadata": {"n": 0}, "cells": [cell]})
    text = text.replace('"nbformat_minor": 0', f'"nbformat_minor": {huge}').replace('"n": 0', f'"n": -{huge}')
    text = text.replace('"execution_count": 0', f'"execution_count": {huge}')
    (tmp_path / "odd.ipynb").write_text(text)
    assert extract(tmp_path / "odd.ipynb").defined_names() == {"f"}


@pytest.mark.parametrize("version", ["4.5", "1e309", "9" * 5000, "true"])
def test_a_format_the_grader_cannot_read_is_named_without_python_internals(tmp_path, version):
    (tmp_path / "odd.ipynb").write_text('{"nbformat": %s, "cells": []}' % version)
    with pytest.raises(SubmissionFormatError) as info:
        extract(tmp_path / "odd.ipynb")
    assert str(info.value).startswith("odd.ipynb says it is in notebook format ")
    assert "Error" not in str(info.value) and "internal" not in str(info.value)
