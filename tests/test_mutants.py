"""Mutation analysis (`autograder mutants`, `verify --mutants`): which mutants the AST transformer makes,
and how the real grading path judges them on the throwaway course of conftest.py."""

from __future__ import annotations

import ast
import textwrap

import pytest

from autograder.cli import main
from autograder.config import ConfigError, load_course
from autograder.mutants import cell_mutants, run, sample, generate, format_report, write_html
from tests.conftest import ASSIGNMENT

CELL = textwrap.dedent('''\
    def quantize(x, bits=8):
        """Symmetric quantization."""
        ### BEGIN SOLUTION
        amax = x.abs().max(dim=-1, keepdim=True).values
        scale = amax / 127
        codes = torch.round(x / scale).clamp(-127, 127).to(torch.int8)
        for i in range(bits):
            if i < 2:
                codes[..., :3] = codes[..., 1:4] * 0.5
        return codes, scale
        ### END SOLUTION

    def helper(y):
        return y + 1
    ''')

# Only the comparison swap: one sandbox run besides the solution's.
SWAP = {"comparison swapped"}
WEAK_SUITE = '''import pytest
import torch

pytestmark = pytest.mark.question("top_k_filter")


@pytest.mark.points(1)
def test_shape(submission):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert submission.top_k_filter(logits, 5).shape == (4, 50)
'''


def _kinds(source: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for function, kind, line, mutated in cell_mutants(source):
        found.setdefault(kind, []).append(mutated)
        ast.parse(mutated)  # every mutant is valid Python
        assert function == "quantize", "code outside the solution region is never mutated"
    return found


def test_each_kind_of_mutation_of_a_known_function():
    kinds = _kinds(CELL)
    assert set(kinds) == {
        "dim changed", "constant nudged", "arithmetic swapped", "round -> floor", "clamp lower bound shifted",
        "clamp upper bound shifted", ".to(dtype) removed", "range argument 1 +1", "comparison swapped",
        "slice upper bound +1", "slice lower bound +1", "statement deleted", "returns the first argument",
    }
    changed = {kind: [next(line.strip() for line, old in zip(m.splitlines(), CELL.splitlines()) if line != old)
                      for m in mutants] for kind, mutants in kinds.items()}
    assert "amax = x.abs().max(dim=0, keepdim=True).values" in changed["dim changed"]
    assert "scale = amax / 128" in changed["constant nudged"]
    assert "codes[..., :3] = codes[..., 1:4] * 0.4" in changed["constant nudged"]
    assert "scale = amax * 127" in changed["arithmetic swapped"]
    assert "codes = torch.floor(x / scale).clamp(-127, 127).to(torch.int8)" in changed["round -> floor"]
    assert "codes = torch.round(x / scale).clamp(-126, 127).to(torch.int8)" in changed["clamp lower bound shifted"]
    assert "codes = torch.round(x / scale).clamp(-127, 126).to(torch.int8)" in changed["clamp upper bound shifted"]
    assert "codes = torch.round(x / scale).clamp(-127, 127)" in changed[".to(dtype) removed"]
    assert "for i in range(bits + 1):" in changed["range argument 1 +1"]
    assert "if i <= 2:" in changed["comparison swapped"]
    assert changed["slice upper bound +1"] == ["codes[..., :4] = codes[..., 1:4] * 0.5",
                                               "codes[..., :3] = codes[..., 1:5] * 0.5"]
    assert "return x" in changed["returns the first argument"]
    assert "pass" in changed["statement deleted"]
    # slice bounds and dims are mutated once, as such, not again as nudged constants
    assert not any("-126" in c or "dim=-2" in c for c in changed["constant nudged"])


def test_parentheses_only_where_precedence_changes():
    source = "def f(a, n):\n    ### BEGIN SOLUTION\n    return a[..., n:] * 2\n    ### END SOLUTION\n"
    bodies = {m.splitlines()[2].strip() for _, _, _, m in cell_mutants(source)}
    assert "return a[..., n + 1:] * 2" in bodies
    assert "return a[..., n:] / 2" in bodies
    assert "return a[..., n:] * 3" in bodies


def test_sample_is_deterministic_and_in_notebook_order(make_course):
    mutants = generate(make_course() / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert len(mutants) == 5
    first, second = sample(mutants, 3), sample(mutants, 3)
    assert first == second and len(first) == 3
    assert [m.number for m in first] == sorted(m.number for m in first)
    assert sample(mutants, None) == mutants


def test_threshold_is_validated(make_course, course_config):
    course_config["ASSIGNMENTS"][0]["mutation_threshold"] = 1.5
    with pytest.raises(ConfigError, match="mutation_threshold: 1.5 is not a number from 0 to 1"):
        load_course(make_course(config=course_config))


def test_weak_suite_lets_a_mutant_survive_and_the_report_shows_it(make_course, tmp_path):
    assignment = load_course(make_course(grader_tests={"test_top_k.py": WEAK_SUITE})).get(ASSIGNMENT)
    report = run(assignment, kinds=SWAP, jobs=2)
    assert not report.solution_problem
    [verdict] = report.verdicts
    assert verdict.status == "survived"
    assert report.line().startswith(f"{ASSIGNMENT}: 0/1 killed (0%), 1 survived")
    text = format_report(report)
    assert "SURVIVED m" in text and "comparison swapped" in text
    assert "+    return logits.masked_fill(logits <= kth, float(\"-inf\"))" in text
    assert "passed: test_top_k.py::test_shape" in text
    page = write_html(report, assignment, tmp_path / "html").read_text()
    assert "logits &lt;= kth" in page and "survived" in page


def test_strong_suite_kills_it(make_course):
    assignment = load_course(make_course()).get(ASSIGNMENT)  # HIDDEN_SUITE counts the kept logits
    report = run(assignment, kinds=SWAP, jobs=2)
    assert [v.status for v in report.verdicts] == ["killed"]
    assert report.verdicts[0].lost == ["test_top_k.py::test_top_k_on_random_logits"]
    assert report.score == 1.0


def test_verify_mutants_fails_below_the_threshold(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0].update(mutation_threshold=0.9, points=1)  # what the suite awards
    root = make_course(config=course_config, grader_tests={"test_top_k.py": WEAK_SUITE})
    assert main(["--course-root", str(root), "release", "--no-verify"]) == 0
    status = main(["--course-root", str(root), "verify", "--mutants", "--jobs", "2"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "mutation score" in err and "below its threshold 90%" in err and "comparison swapped" in err
    assert f"{ASSIGNMENT}: FAILED" in out


def test_mutants_command_prints_the_score_and_writes_the_page(make_course, tmp_path, capsys):
    root = make_course()  # HIDDEN_SUITE kills every mutant of the demo solution
    assert main(["--course-root", str(root), "mutants", "--max", "1", "--jobs", "1", "--html", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{ASSIGNMENT}: 1/1 killed (100%), 0 survived, 0 timed out, 0 errors (sample of 5)" in out
    assert "per question:\n    top_k_filter: 1/1 killed" in out
    assert "mutation report" in (tmp_path / f"{ASSIGNMENT}_mutants.html").read_text()
