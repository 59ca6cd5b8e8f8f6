"""`autograder validate`: what a student learns before handing in, read as the grader reads the notebook.

Static findings on every bundled sample and on the unsolved releases; edited and deleted locked cells,
imports the grader lacks, state lost at grading time, changed signatures; the public checks in a child
process (a pass, an endless loop, an exit); the CLI without a course config; the release's first and
last cells.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from autograder.cli import main
from autograder.grading.extraction import extract, imported_names
from autograder.student.validate import (ValidateError, _forbidden_uses, _notebook_path, _statements,
                                         run_public_checks, validate, validate_notebook)

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.name for p in (ROOT / "samples").iterdir() if (p / "expected.json").exists())
SAMPLES = [(a, p.stem) for a in ASSIGNMENTS for p in sorted((ROOT / "samples" / a).glob("*.ipynb"))]

# The samples that would lose points for more than wrong results, with a fragment of each finding.
# Every other sample must validate without a problem (exit status 0).
EXPECTED_PROBLEMS = {
    ("01_intro", "forbidden_generate"): ["`greedy_generate`", "GenerationMixin.generate"],
    ("01_intro", "logits_warpers_called"): ["`top_k_filter`", "TopKLogitsWarper", "`top_p_filter`", "TopPLogitsWarper"],
    ("01_intro", "partial"): ["`greedy_generate` is not implemented yet",
                              "`stochastic_generate` is not implemented yet"],
    ("02_transformer_architecture", "sdpa_called"): ["torch.nn.functional.scaled_dot_product_attention"],
    ("02_transformer_architecture", "generate_through_its_wrapper"): [
        "`batched_greedy_generate`", "`generate_with_kv_cache`", "GenerationMixin.generate"],
    ("03_efficient_inference_part_1", "quantize_through_torch_ops"): ["`absmax_quantize`", "aten::quantize_per_*"],
    ("04_efficient_inference_part_2", "bnb_called"): ["`nf4_quantize`", "bitsandbytes.functional.quantize_4bit"],
    ("04_efficient_inference_part_2", "bnb_through_torch_ops"): ["`vectorwise_quantize`", "bitsandbytes::*"],
}


def release_of(assignment: str) -> Path:
    return ROOT / "release" / assignment / f"{assignment}.ipynb"


def release_copy(tmp_path: Path, assignment: str = "01_intro") -> tuple[Path, nbformat.NotebookNode]:
    """The release notebook and its public checks, copied as a student gets them."""
    folder = tmp_path / assignment
    shutil.copytree(ROOT / "release" / assignment, folder)
    path = folder / f"{assignment}.ipynb"
    return path, nbformat.read(path, as_version=4)


def cell_of(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def solved(tmp_path: Path) -> tuple[Path, nbformat.NotebookNode]:
    """01_intro's release solved: the correct sample's code in the first answer cell (greedy_generate),
    the other answer cells emptied; nbgrader cells intact."""
    path, nb = release_copy(tmp_path)
    correct = "\n".join(c.source for c in nbformat.read(ROOT / "samples/01_intro/correct.ipynb", 4).cells
                        if c.cell_type == "code")
    answers = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    answers[0].source = correct
    for cell in answers[1:]:
        cell.source = ""
    nbformat.write(nb, path)
    return path, nb


def problems(path: Path, release: Path | None = None) -> list[str]:
    report = validate_notebook(path, release=release, run_checks=False)
    assert report.exit_status == (1 if report.problems else 0)
    return report.problems


# --- the bundled samples and the unsolved releases ------------------------------------------------


@pytest.mark.parametrize(("assignment", "sample"), SAMPLES, ids=[f"{a}/{s}" for a, s in SAMPLES])
def test_each_sample_gets_exactly_its_findings(assignment, sample):
    found = problems(ROOT / "samples" / assignment / f"{sample}.ipynb", release=release_of(assignment))
    wanted = EXPECTED_PROBLEMS.get((assignment, sample), [])
    assert bool(found) == bool(wanted), found
    for fragment in wanted:
        assert any(fragment in p for p in found), (fragment, found)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_unsolved_release_has_every_graded_name_missing(assignment):
    meta = nbformat.read(release_of(assignment), 4).metadata["autograder"]
    found = problems(release_of(assignment))
    for task, names in meta["graded"].items():
        assert any(p.startswith(tuple(f"`{name}`" for name in names)) and "not implemented yet" in p
                   for p in found), (task, found)
    assert any(p.startswith("`absmax_quantize` (task absmax) is not implemented yet") for p in found) == (
        assignment == "03_efficient_inference_part_1")
    assert not any("locked" in p for p in found), "the release's own locked cells are as released"


def test_the_release_records_the_hidden_suites_forbidden_apis():
    meta = nbformat.read(release_of("02_transformer_architecture"), 4).metadata["autograder"]
    assert meta["forbidden"]["scaled_dot_product_attention"] == "torch.nn.functional.scaled_dot_product_attention"
    assert "causal_mask" not in meta["forbidden"]
    assert meta["graded"]["MultiHeadSelfAttention"]["MultiHeadSelfAttention.forward"] == "(self, x, causal=True)"


SDPA = "torch.nn.functional.scaled_dot_product_attention"


@pytest.mark.parametrize(("imports", "body", "api", "found"), [
    ("import torch.nn.functional as F", "F.scaled_dot_product_attention(q, k, v)", SDPA, True),
    ("import torch", "torch._C._nn.scaled_dot_product_attention(q, k, v)", SDPA, True),
    ("from torch.nn.functional import scaled_dot_product_attention as sdpa", "sdpa(q, k, v)", SDPA, True),
    ("import torch.nn.functional as F", "getattr(F, 'scaled_dot_product_attention')(q, k, v)", SDPA, True),
    ("import torch", "torch.softmax(q @ k.T, -1) @ v", SDPA, False),
    ("import torch", "torch.matmul(q, k)", "bitsandbytes.matmul", False),
    ("import bitsandbytes as bnb", "bnb.matmul(q, k)", "bitsandbytes.matmul", True),
    ("import torch", "torch.ops.bitsandbytes.int8_vectorwise_quant(q)", "bitsandbytes::*", True),
    ("import torch", "q.model.generate(k)", "transformers.generation.utils.GenerationMixin.generate", True),
    ("import torch", "scaled_dot_product_attention(q, k, v)", SDPA, False),  # the notebook's own function
])
def test_forbidden_apis_are_found_by_alias_binding_and_getattr(tmp_path, imports, body, api, found):
    notebook = tmp_path / "nb.ipynb"
    code = (f"{imports}\n\ndef f(q, k, v):\n    return {body}\n\n"
            "def scaled_dot_product_attention(q, k, v):\n    return q\n")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), notebook)
    kept = _statements(extract(notebook))
    function = next(s.node for s in kept if getattr(s.node, "name", "") == "f")
    assert bool(_forbidden_uses(function, api, {"f", "scaled_dot_product_attention"}, imported_names(s.node for s in kept))) == found


# --- findings on a notebook started from the release -----------------------------------------------


def test_a_solved_release_notebook_validates_clean(tmp_path):
    path, _ = solved(tmp_path)
    assert problems(path) == []


def test_an_edited_locked_cell_and_a_deleted_test_cell_are_named(tmp_path):
    path, nb = solved(tmp_path)
    cell_of(nb, "setup").source += "\nimport math"
    nb.cells.remove(cell_of(nb, "check_top_k_filter"))
    nbformat.write(nb, path)
    found = problems(path)
    assert len(found) == 2, found
    assert "(setup) is a locked or test cell and was edited" in found[0]
    assert "were deleted: check_top_k_filter" in found[1]


def test_an_import_the_grader_lacks_costs_points_only_when_graded_code_uses_it(tmp_path):
    path, nb = solved(tmp_path)
    nb.cells.insert(3, nbformat.v4.new_code_cell("from datasets import load_dataset\nimport numpy"))
    nbformat.write(nb, path)
    report = validate_notebook(path, run_checks=False)
    assert report.problems == []
    assert any("`from datasets import load_dataset` fails when grading" in n and "`datasets`" in n
               for n in report.notes), report.notes

    cell_of(nb, "greedy_generate").source += ("\n\ndef greedy_generate(model, tokenizer, prompt, gen_len):\n"
                                             "    return helper()\n\ndef helper():\n    return load_dataset('x')\n")
    nbformat.write(nb, path)
    found = problems(path)
    assert found == ["`helper` uses `load_dataset`, but `from datasets import load_dataset` (cell 4, line 1) fails "
                     "when grading: the grader has no `datasets`"], found


def test_state_set_by_code_that_does_not_run_when_grading_is_named_with_its_line(tmp_path):
    path, nb = solved(tmp_path)
    cell_of(nb, "greedy_generate").source += ("\n\ndef greedy_generate(model, tokenizer, prompt, gen_len):\n"
                                             "    return stochastic_generate(model, tokenizer, prompt, gen_len, "
                                             "top_k=default_k)\n")
    experiment = next(i for i, c in enumerate(nb.cells) if "qwen_name =" in c.source)
    nb.cells[experiment].source += "\ndefault_k = 1"
    nbformat.write(nb, path)
    report = validate_notebook(path, run_checks=False)
    number = experiment + 1
    assert report.problems == [
        f"`greedy_generate` uses `default_k`, which cell {number}, line 5 sets (`default_k = 1`); that line does "
        "not run when grading (only top-level imports, `def`, `class` and UPPER_CASE constants do): create it "
        "inside the function, pass it as an argument or make it an UPPER_CASE constant"], report.problems
    # the student's own line is listed; the release's demo lines around it are only counted
    assert report.not_run == [f"cell {number}, line 5: default_k = 1"], report.not_run
    assert report.given_not_run > 3
    text = report.format()
    assert "qwen_name" not in text and f"({report.given_not_run} top-level statements) does not run" in text


def test_missing_public_checks_are_said_plainly_not_as_a_note(tmp_path):
    path, _ = solved(tmp_path)
    (path.parent / "public_checks.py").unlink()
    report = validate_notebook(path)
    assert report.checks is None and not any("public_checks" in n for n in report.notes)
    assert ("Public checks: NOT RUN (keep public_checks.py from the release next to your notebook and validate again)"
            in report.format())


def test_a_default_argument_set_where_it_does_not_run_is_named(tmp_path):
    path, nb = solved(tmp_path)
    cell_of(nb, "greedy_generate").source += ("\n\ndef greedy_generate(model, tokenizer, prompt, gen_len):\n"
                                             "    return helper(prompt)\n\n"
                                             "def helper(prompt, suffix=suffix_text):\n    return prompt + suffix\n")
    nb.cells.insert(3, nbformat.v4.new_code_cell('suffix_text = "!"'))
    nbformat.write(nb, path)
    assert [p.split(";")[0] for p in problems(path)] == [
        '`helper` uses `suffix_text`, which cell 4, line 1 sets (`suffix_text = "!"`)']


def test_a_changed_signature_and_a_missing_function_are_named(tmp_path):
    path, nb = solved(tmp_path)
    cell = cell_of(nb, "greedy_generate")  # holds the whole correct sample
    cell.source = cell.source.replace("def apply_temperature(logits", "def apply_temperature(scores")
    cell.source = cell.source.replace("def top_p_filter(", "def nucleus_filter(")
    nbformat.write(nb, path)
    found = problems(path)
    assert any(p.startswith("`apply_temperature` takes (scores, temperature) but the release "
                            "says (logits, temperature)") for p in found), found
    assert any(p.startswith("`top_p_filter` is not defined where the grader sees it") for p in found)


# --- public checks, in a child process -------------------------------------------------------------


CHECKS = '''
import os
from autograder.student.checks import check, public_check

@public_check("first")
def returns_one(first):
    assert first() == 1, "first() should return 1"

@public_check("loops")
def finishes(loops):
    loops()

@public_check("exits")
def returns(exits):
    exits()

@public_check("last")
def returns_two(last):
    assert last() == 2
'''

CODE = '''
import os

def first():
    return 1

def loops():
    while True:
        pass

def exits():
    os._exit(3)

def last():
    return 3
'''


@pytest.mark.slow
def test_public_checks_survive_an_endless_loop_and_an_exit(tmp_path):
    (tmp_path / "public_checks.py").write_text(CHECKS)
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)]), notebook)
    rows = run_public_checks(notebook, "definitions", tmp_path, timeout=3)
    assert rows == [
        ("first: returns one", True, ""),
        ("loops", False, "did not finish within 3 s (an endless loop?)"),
        ("exits", False, "your code ended the Python process (exit status 3) instead of returning"),
        ("last: returns two", False, "a check failed"),
    ]


@pytest.mark.slow
def test_validate_in_the_notebook_prints_the_report_with_the_public_checks(tmp_path, capsys, monkeypatch):
    path, _ = solved(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    assert _notebook_path({}) == path
    validate()
    out = capsys.readouterr().out
    assert "Public checks: 11/11 passed" in out
    assert "Nothing found that costs points beyond wrong results" in out and "autograder pack" in out


# --- the command and the release's cells ----------------------------------------------------------


def test_cli_works_without_a_course_config_and_exits_by_finding(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no course_config.py at or above
    path, nb = solved(tmp_path)
    assert main(["validate", str(path), "--no-checks"]) == 0
    cell_of(nb, "setup").source = "import torch"
    nbformat.write(nb, path)
    assert main(["validate", str(path), "--no-checks"]) == 1
    assert "(setup) is a locked or test cell and was edited" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys):
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), plain)
    (tmp_path / "broken.ipynb").write_text("{not json")
    tampered = nbformat.v4.new_notebook(metadata={"autograder": {"assignment": "01_intro", "graded": []}})
    (tmp_path / "sub").mkdir()  # not next to the others: --release of tmp_path must find two notebooks
    nbformat.write(tampered, tmp_path / "sub" / "tampered.ipynb")
    for args in ([str(plain)], [str(tmp_path / "broken.ipynb")], [str(tmp_path / "absent.ipynb")],
                 [str(tmp_path / "sub" / "tampered.ipynb")],
                 [str(plain), "--release", str(tmp_path)], [str(plain), "--timeout", "0"]):
        assert main(["validate", *args, "--no-checks"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("autograder: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["validate", str(plain), "--no-checks", "--release", str(release_of("01_intro"))]) == 1


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_notebooks_open_with_how_to_hand_in_and_end_with_validate(assignment):
    nb = nbformat.read(release_of(assignment), 4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.metadata.nbgrader.locked
    for words in ("autograder validate NOTEBOOK", "autograder pack NOTEBOOK --team", "UPPER_CASE constants"):
        assert words in " ".join(first.source.split())
    assert last.source.startswith("from autograder.validate import validate") and "validate()" in last.source
    assert last.metadata.nbgrader.grade and last.metadata.nbgrader.points == 0
    kept = "".join(cell.source for cell in extract(release_of(assignment)).cells)
    assert "autograder.validate" not in kept, "grading must never run the validate cell"
    assert json.loads(json.dumps(nb.metadata["autograder"]))["assignment"] == assignment


def test_validate_reads_what_the_grader_reads_and_names_no_python_exception(tmp_path):
    path, _ = solved(tmp_path)
    text = path.read_text().replace('"execution_count": null', '"execution_count": ' + "7" * 5000)
    path.write_text(text.replace('"nbformat": 4,', '"nbformat": 4.0,'))
    assert "7" * 5000 in path.read_text()
    assert problems(path, release=release_of("01_intro")) == []
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [3]}')
    with pytest.raises(ValidateError) as info:
        validate_notebook(broken, run_checks=False)
    assert str(info.value) == ("broken.ipynb is not a notebook Jupyter can open: its cells are not all JSON objects; "
                               "open it in Jupyter and save it again")
    broken.write_text('{"nbformat": 7, "cells": []}')
    with pytest.raises(ValidateError, match=r"^broken.ipynb says it is in notebook format 7, the grader reads"):
        validate_notebook(broken, run_checks=False)
