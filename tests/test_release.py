"""Stage 1, the release compiler: stubs, hidden tests, determinism, atomicity, leak check, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import (
    ASSIGNMENT,
    HIDDEN_SUITE,
    HIDDEN_TEST_LINE,
    MODEL_ANSWER,
    PUBLIC_CHECKS,
    QUESTION,
    SOLUTION_LINE,
    demo_cells,
)
from nbgrader import utils as nbgrader_utils
from nbgrader.converters import GenerateAssignment
from nbgrader.coursedir import CourseDirectory
from nbgrader.nbgraderformat import MetadataValidator
from traitlets.config import Config

from autograder.cli import main
from autograder.course.config import load_course
from autograder.authoring.release import (
    ReleaseError,
    check_release,
    compile_assignment,
    find_leaks,
    is_trivial,
    release_assignment,
)

NOTEBOOK = f"{ASSIGNMENT}.ipynb"
SOURCE_LABEL = f"source/{ASSIGNMENT}/{NOTEBOOK}"


def released_notebook(assignment) -> nbformat.NotebookNode:
    return nbformat.reads(compile_assignment(assignment)[NOTEBOOK].decode(), as_version=4)


def assignment_of(root):
    return load_course(root).get(ASSIGNMENT)


def snapshot(folder) -> dict:
    """Every path under `folder` with its bytes (None for folders), to prove nothing changed."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


# --- what the release contains ------------------------------------------------------------------


def test_solutions_become_stubs_and_hidden_tests_disappear(assignment):
    setup, answer, test, question, reflection = released_notebook(assignment).cells[2:-1]  # after the guide and title
    assert answer.source == (
        'def top_k_filter(logits, k):\n    """Keep the k largest logits per row."""\n'
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert test.source == 'check("top_k_filter")'
    assert reflection.source == "YOUR ANSWER HERE"
    assert question.source == QUESTION  # what the student answers stays in view
    assert setup.source == "import torch\nfrom public_checks import check"


def test_outputs_and_execution_counts_are_cleared(assignment):
    code_cells = [c for c in released_notebook(assignment).cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells)


def test_cells_carry_locks_and_checksums(assignment):
    nb = released_notebook(assignment)
    nbformat.validate(nb)
    MetadataValidator().validate_nb(nb)
    graded = [c for c in nb.cells if "nbgrader" in c.metadata]
    assert [c.metadata.nbgrader.grade_id for c in graded] == [
        "before_you_hand_in", "setup", "top_k_filter", "check_top_k_filter", "reflection_sampling", "validate"]
    for cell in graded:
        assert cell.metadata.nbgrader.checksum == nbgrader_utils.compute_checksum(cell)
        assert cell.metadata.deletable is False
    guide, setup, answer, test, reflection, validate = graded
    assert all(c.metadata.editable is False for c in (guide, setup, test, validate))
    assert "editable" not in answer.metadata and "editable" not in reflection.metadata


def test_the_first_cell_states_the_assignments_time_and_memory_limits(make_course, course_config):
    """A student who does not know the limits can break them: the release says them, as configured."""
    course_config["DEFAULTS"]["limits"].update(call_timeout_s=7, submission_timeout_s=90, memory_mb=1536)
    guide = released_notebook(assignment_of(make_course(config=course_config))).cells[0].source
    assert "may take 7 s, all calls together 90 s\n(reloading this notebook after your code crashed" in guide
    assert "your code may use\n1536 MB of memory" in guide
    assert "two calls in a row is not\ncalled again" in guide


def test_every_release_states_that_graded_functions_must_work_on_cuda_too():
    """GPU checks carry points, so the rule a student could break without knowing it is stated in each release."""
    for notebook in sorted(Path(__file__).resolve().parents[1].glob("release/*/*.ipynb")):
        guide = " ".join(nbformat.read(notebook, as_version=4).cells[0].source.split())
        assert "**CPU and GPU.**" in guide and "on the CPU and on CUDA alike" in guide, notebook.name
        assert "return results on the input's device" in guide and "CUDA has no integer matrix product" in guide


def test_other_source_files_are_copied_byte_for_byte(assignment):
    files = compile_assignment(assignment)
    assert sorted(files) == ["01_demo.ipynb", "data/weights.bin", "public_checks.py"]
    assert files["public_checks.py"] == PUBLIC_CHECKS.encode()
    assert files["data/weights.bin"] == bytes(range(256))


def test_release_equals_nbgrader_generate_assignment(assignment, tmp_path):
    """nbgrader's own pipeline (minus its database) on the same source yields the same release, apart
    from what the release adds for students: the first and last cell and the validation metadata."""
    nbgrader_root = tmp_path / "nbgrader"
    shutil.copytree(assignment.source_dir, nbgrader_root / "source" / "ps1")
    config = Config({
        "CourseDirectory": {"root": str(nbgrader_root), "assignment_id": "ps1"},
        "GenerateAssignment": {"no_database": True},
        "SaveCells": {"enabled": False},
    })
    GenerateAssignment(coursedir=CourseDirectory(config=config), config=config).start()
    theirs = nbgrader_root / "release" / "ps1"
    ours = compile_assignment(assignment)
    released = released_notebook(assignment)
    released.cells = released.cells[1:-1]
    del released.metadata["autograder"]
    assert nbformat.read(theirs / NOTEBOOK, as_version=4) == released
    assert {rel: (theirs / rel).read_bytes() for rel in ours if rel != NOTEBOOK} == {
        rel: data for rel, data in ours.items() if rel != NOTEBOOK}


def test_release_is_byte_identical_on_rerun(assignment):
    first = release_assignment(assignment)
    before = snapshot(assignment.release_dir)
    assert release_assignment(assignment) == first
    assert snapshot(assignment.release_dir) == before
    assert before[NOTEBOOK].endswith(b"}\n")
    assert before[NOTEBOOK] == compile_assignment(assignment)[NOTEBOOK]


def test_release_folder_gets_the_permissions_of_release_root_not_of_a_temp_dir(assignment):
    assignment.release_dir.parent.mkdir()
    assignment.release_dir.parent.chmod(0o755)
    release_assignment(assignment)
    assert assignment.release_dir.stat().st_mode & 0o777 == 0o755


def test_release_removes_files_no_longer_in_source(assignment):
    release_assignment(assignment)
    (assignment.source_dir / "data" / "weights.bin").unlink()
    release_assignment(assignment)
    assert sorted(snapshot(assignment.release_dir)) == ["01_demo.ipynb", "public_checks.py"]


# --- malformed sources ----------------------------------------------------------------------------

BROKEN = {
    "unclosed solution": (
        lambda c: [c.answer("f", "def f():\n    ### BEGIN SOLUTION\n    return 1")],
        "cell 1 (grade_id 'f'), line 2: 'BEGIN SOLUTION' is never closed by 'END SOLUTION'"),
    "end without begin": (
        lambda c: [c.answer("f", "def f():\n    return 1\n    ### END SOLUTION")],
        "cell 1 (grade_id 'f'), line 3: 'END SOLUTION' without a matching"),
    "nested solutions": (
        lambda c: [c.answer("f", "### BEGIN SOLUTION\nx = 1\n### BEGIN SOLUTION\n### END SOLUTION")],
        "cell 1 (grade_id 'f'), line 3: 'BEGIN SOLUTION' inside the solution region opened on line 1"),
    "solution marker in a plain cell": (
        lambda c: [c.markdown("intro"), c.code("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")],
        "cell 2, line 1: a solution marker may only appear in an answer cell"),
    "solution marker in a read-only cell": (
        lambda c: [c.readonly("given", "x = 1\n### BEGIN SOLUTION\n### END SOLUTION")],
        "cell 1 (grade_id 'given'), line 2: a solution marker may only appear in an answer cell"),
    "hidden tests in an answer cell": (
        lambda c: [c.answer("f", "### BEGIN HIDDEN TESTS\nassert f() == 1\n### END HIDDEN TESTS")],
        "cell 1 (grade_id 'f'), line 1: a hidden tests marker may only appear in a test cell"),
    "mark scheme in a plain cell": (
        lambda c: [c.markdown("### BEGIN MARK SCHEME\nfull marks if ...\n### END MARK SCHEME")],
        "cell 1, line 1: a mark scheme marker may only appear in a task cell"),
    "duplicate grade ids": (
        lambda c: [c.answer("f", "x = 1"), c.markdown("text"), c.test("f", "assert x == 1")],
        "cell 3 (grade_id 'f'): duplicate grade_id, also used by cell 1"),
    "answer cell without grade_id": (
        lambda c: [c.answer("", "x = 1")],
        "cell 1: nbgrader cell without a grade_id"),
    "written answer without a question above it": (
        lambda c: [c.answer("f", "x = 1"), c.reflection("why", "Because.")],
        "cell 2 (grade_id 'why'): a written answer's whole text becomes \"YOUR ANSWER HERE\" in the release, so "
        "students would never see the question: put the question in a markdown cell of its own just above"),
    "written answer below another one": (
        lambda c: [c.markdown("Why?"), c.reflection("why", "Because."), c.reflection("how", "Thus.")],
        "cell 3 (grade_id 'how'): a written answer's whole text becomes"),
    "test cell without points": (
        lambda c: [c.test("t", "assert True", points=None)],
        "cell 1 (grade_id 't'): invalid nbgrader metadata: nbgrader cell 't' does not have points"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_malformed_source_names_cell_and_line_and_touches_nothing(make_course, cells, case):
    build, expected = BROKEN[case]
    assignment = assignment_of(make_course(build(cells)))
    (assignment.release_dir / "old.txt").parent.mkdir(parents=True)
    (assignment.release_dir / "old.txt").write_text("previous release")
    release_root = assignment.release_dir.parent
    before = snapshot(release_root)
    with pytest.raises(ReleaseError) as caught:
        release_assignment(assignment)
    assert str(caught.value).startswith(f"{SOURCE_LABEL}: ")
    assert expected in str(caught.value)
    assert snapshot(release_root) == before


def test_invalid_json_names_notebook_and_line(assignment):
    path = assignment.source_dir / NOTEBOOK
    path.write_text('{\n "cells": [\n  {"cell_type": "code",,}\n ]\n}\n')
    with pytest.raises(ReleaseError, match=rf"^{SOURCE_LABEL}: not valid notebook JSON \(line 3, column"):
        compile_assignment(assignment)


def test_json_that_is_no_notebook_is_reported(assignment):
    (assignment.source_dir / NOTEBOOK).write_text("[]")
    with pytest.raises(ReleaseError, match=rf"^{SOURCE_LABEL}: not a valid notebook"):
        compile_assignment(assignment)


def test_missing_cell_ids_are_refused_not_invented(assignment):
    """nbformat would make up random ids, and the release would change on every run."""
    path = assignment.source_dir / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    del nb.cells[2]["id"]
    path.write_text(json.dumps(nb))
    with pytest.raises(ReleaseError, match="cells without an id"):
        compile_assignment(assignment)


# --- atomic write and the verify hook -------------------------------------------------------------


def test_before_write_sees_the_complete_release_and_can_veto_it(assignment):
    release_assignment(assignment)
    (assignment.source_dir / "public_checks.py").write_text("# changed\n")
    before = snapshot(assignment.release_dir.parent)
    seen = {}

    def veto(staged_assignment, staging):
        seen.update(snapshot(staging))
        raise ReleaseError("verify failed")

    with pytest.raises(ReleaseError, match="verify failed"):
        release_assignment(assignment, before_write=veto)
    assert seen["public_checks.py"] == b"# changed\n" and NOTEBOOK in seen
    assert snapshot(assignment.release_dir.parent) == before


def test_before_write_that_passes_lets_the_release_through(assignment):
    calls = []
    release_assignment(assignment, before_write=lambda a, staging: calls.append((a.id, staging.is_dir())))
    assert calls == [(ASSIGNMENT, True)]
    assert check_release(assignment) == []


# --- check_release --------------------------------------------------------------------------------


def test_check_reports_missing_release_folder(assignment):
    assert check_release(assignment) == [
        f"release/{ASSIGNMENT}/ does not exist; run `autograder release {ASSIGNMENT}`"]


def test_check_names_stale_missing_and_extra_files(assignment):
    release_assignment(assignment)
    release = assignment.release_dir
    (release / "public_checks.py").write_text("# edited by hand\n")
    (release / "data" / "weights.bin").unlink()
    (release / "notes.md").write_text("scratch")
    (release / "__pycache__").mkdir()
    (release / "__pycache__" / "public_checks.cpython-311.pyc").write_bytes(b"\0")
    problems = check_release(assignment)
    assert [p.split(" ")[0] for p in problems] == [
        f"release/{ASSIGNMENT}/data/weights.bin", f"release/{ASSIGNMENT}/notes.md",
        f"release/{ASSIGNMENT}/public_checks.py"]
    assert "is missing" in problems[0] and "does not come from" in problems[1] and "is stale" in problems[2]


# --- leak check -----------------------------------------------------------------------------------


def test_public_checks_copying_a_hidden_test_line_block_the_release(make_course):
    leaked = "    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))"
    assignment = assignment_of(make_course(files={"public_checks.py": PUBLIC_CHECKS + leaked + "\n"}))
    with pytest.raises(ReleaseError) as caught:
        release_assignment(assignment)
    hidden_line = HIDDEN_SUITE.split("\n").index(leaked) + 1
    public_line = PUBLIC_CHECKS.count("\n") + 1
    assert (f"release/{ASSIGNMENT}/public_checks.py line {public_line}: " in str(caught.value)
            and f"comes from grader_tests/{ASSIGNMENT}/test_top_k.py line {hidden_line}, hidden in {ASSIGNMENT}"
            in str(caught.value))
    assert not assignment.release_dir.parent.exists()


@pytest.mark.parametrize("leaked, origin", [
    (SOLUTION_LINE, f"{SOURCE_LABEL} cell 3 line 4"),
    (HIDDEN_TEST_LINE, f"{SOURCE_LABEL} cell 4 line 3"),
    (MODEL_ANSWER, f"{SOURCE_LABEL} cell 6 line 1"),
])
def test_notebook_lines_shown_elsewhere_in_the_release_are_leaks(make_course, cells, leaked, origin):
    source = demo_cells() + [cells.markdown(f"Hint:\n   {leaked}  ")]
    with pytest.raises(ReleaseError, match="would leak") as caught:
        release_assignment(assignment_of(make_course(source)))
    assert (f"release/{ASSIGNMENT}/{NOTEBOOK} cell 8 line 2: {leaked!r} comes from {origin}, hidden in {ASSIGNMENT}"
            in str(caught.value))


def test_check_finds_leaks_anywhere_under_release(assignment):
    release_assignment(assignment)
    other = assignment.release_dir.parent / "02_other"
    other.mkdir()
    (other / "notes.py").write_text(f"# notes\n{SOLUTION_LINE}\n")
    (other / "weights.bin").write_bytes(b"\x80 secret snapshot")
    (assignment.tests_dir / "snapshot.bin").write_bytes(b"\x80 secret snapshot")
    assert check_release(assignment) == [
        f"release/02_other/notes.py line 2: {SOLUTION_LINE!r} comes from {SOURCE_LABEL} cell 3 line 4, "
        f"hidden in {ASSIGNMENT}",
        f"release/02_other/weights.bin is a copy of grader_tests/{ASSIGNMENT}/snapshot.bin, hidden in {ASSIGNMENT}",
    ]


def test_only_distinctive_lines_shared_with_hidden_code_are_leaks(make_course):
    trivial = "import torch\n\n    return logits\n)\nelse:\n# shared comment line here\n"
    idioms = "for module in model.modules():\nprobs = torch.softmax(logits, dim=-1)\n"  # torch writes them too
    hidden = trivial + idioms + "kept = probs.cumsum(-1) - probs < top_p\n"
    assignment = assignment_of(make_course(grader_tests={"test_x.py": hidden}))
    assert find_leaks(assignment, {"release/x.py": hidden.encode()}) == [
        "release/x.py line 9: 'kept = probs.cumsum(-1) - probs < top_p' "
        f"comes from grader_tests/{ASSIGNMENT}/test_x.py line 9, hidden in {ASSIGNMENT}"]


def two_assignment_course(make_course, course_config, other_checks: str) -> Path:
    """The demo course plus 02_other, whose public checks are `other_checks`."""
    course_config["ASSIGNMENTS"].append({**course_config["ASSIGNMENTS"][0], "id": "02_other"})
    root = make_course(config=course_config)
    shutil.copytree(root / "source" / ASSIGNMENT, root / "source" / "02_other")
    shutil.copytree(root / "grader_tests" / ASSIGNMENT, root / "grader_tests" / "02_other")
    (root / "source" / "02_other" / "public_checks.py").write_text(other_checks)
    notebook = root / "source" / "02_other" / f"{ASSIGNMENT}.ipynb"
    notebook.rename(root / "source" / "02_other" / "02_other.ipynb")
    other = root / "source" / "02_other" / "02_other.ipynb"
    other.write_text(other.read_text().replace(SOLUTION_LINE, "kth = logits.sort(dim=-1).values[..., -k:-k + 1]"))
    return root


def test_one_leak_check_for_release_check_and_the_whole_course(make_course, course_config, capsys):
    """A line hidden in 01 shown in 02's release: `release 02`, `release --check 02` and the whole course
    all name 01 as the origin, and none of them calls 02 up to date."""
    root = two_assignment_course(make_course, course_config, PUBLIC_CHECKS + f"    {SOLUTION_LINE}\n")
    leak = (f"release/02_other/public_checks.py line 9: {SOLUTION_LINE!r} comes from {SOURCE_LABEL} cell 3 line 4, "
            f"hidden in {ASSIGNMENT}")
    assert main(["--course-root", str(root), "release", "--no-verify", "02_other"]) == 2
    err = capsys.readouterr().err
    assert leak in err, err
    assert not (root / "release" / "02_other").exists()

    (root / "source" / "02_other" / "public_checks.py").write_text(PUBLIC_CHECKS)
    assert main(["--course-root", str(root), "release", "--no-verify"]) == 0
    capsys.readouterr()
    (root / "release" / "02_other" / "public_checks.py").write_text(PUBLIC_CHECKS + f"    {SOLUTION_LINE}\n")
    for argv in (["02_other"], [ASSIGNMENT], []):
        assert main(["--course-root", str(root), "release", "--check", *argv]) == 1
        out, err = capsys.readouterr()
        assert err.count(leak) == 1, err
        assert "release/02_other/ is up to date" not in out
        assert ("release/02_other/ FAILED" in err) == (argv != [ASSIGNMENT])
        assert f"release/{ASSIGNMENT}/ FAILED" in err if argv != ["02_other"] else True


def test_library_idioms_shared_across_assignments_are_not_leaks(make_course, course_config, capsys):
    """`for module in model.modules():` hidden in 01's suite and given in 02's checks: torch writes it too."""
    idiom = "    for module in model.modules():"
    root = two_assignment_course(make_course, course_config, PUBLIC_CHECKS + f"\n\ndef walk(model):\n{idiom}\n        pass\n")
    (root / "grader_tests" / ASSIGNMENT / "helpers.py").write_text(f"def linears(model):\n{idiom}\n        yield module\n")
    assert main(["--course-root", str(root), "release", "--no-verify"]) == 0
    assert main(["--course-root", str(root), "release", "--check"]) == 0
    assert capsys.readouterr().out.endswith("release/02_other/ is up to date\n")


@pytest.mark.parametrize("line", [
    "", "   ", "# a comment with many words in it", "else:", ")", "]]", '"""', "return None", "pass",
    "import torch", "import torch.nn.functional as F", "from autograder.testing import assert_close, assert_same_text",
    "return logits", "x = a + b", "raise NotImplementedError()", "    with  torch.no_grad():",
])
def test_trivial(line):
    assert is_trivial(line)


@pytest.mark.parametrize("line", [
    SOLUTION_LINE, "return logits / temperature", "probs = torch.softmax(logits, dim=-1)",
    "import torch; print(torch.load('ref.pt'))", MODEL_ANSWER, "assert out.isinf().tolist() == [[True, False]]",
])
def test_distinctive(line):
    assert not is_trivial(line)


# --- command line ---------------------------------------------------------------------------------


def test_cli_release_then_check(make_course, capsys):
    root = make_course()
    assert main(["--course-root", str(root), "release", "--no-verify"]) == 0
    assert main(["--course-root", str(root), "release", ASSIGNMENT, "--check"]) == 0
    assert capsys.readouterr().out == f"release/{ASSIGNMENT}/: 3 files written\nrelease/{ASSIGNMENT}/ is up to date\n"


def test_cli_check_writes_nothing_and_names_the_stale_file(make_course, capsys):
    root = make_course()
    main(["--course-root", str(root), "release", "--no-verify"])
    (root / "source" / ASSIGNMENT / "public_checks.py").write_text("# new checks\n")
    before = snapshot(root / "release")
    assert main(["--course-root", str(root), "release", "--check"]) == 1
    assert f"release/{ASSIGNMENT}/public_checks.py is stale" in capsys.readouterr().err
    assert snapshot(root / "release") == before


def test_cli_finds_the_course_root_from_a_subfolder(make_course, monkeypatch, capsys):
    root = make_course()
    monkeypatch.delenv("AUTOGRADER_COURSE_ROOT", raising=False)
    monkeypatch.chdir(root / "source" / ASSIGNMENT)
    assert main(["release", "--no-verify"]) == 0
    assert (root / "release" / ASSIGNMENT / NOTEBOOK).is_file()


@pytest.mark.parametrize("argv, message", [
    (["release", "99_nope"], "unknown assignment '99_nope'"),
    (["release"], f"{SOURCE_LABEL}: cell 1 (grade_id 'f'), line 1: "),
])
def test_cli_errors_are_one_message_and_status_2(make_course, cells, capsys, argv, message):
    root = make_course([cells.answer("f", "### BEGIN SOLUTION")])
    assert main(["--course-root", str(root), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autograder: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
