"""Mutation analysis (`autograder mutants`, `verify --mutants`): which mutants the AST transformer makes,
and how the real grading path judges them on the throwaway course of conftest.py."""

from __future__ import annotations

import ast
import textwrap

import pytest

from autograder.cli import main
from autograder.course.config import ConfigError, load_course
from autograder.authoring.mutants import cell_mutants, run, sample, generate, format_report, write_html
from tests.conftest import ASSIGNMENT, demo_cells

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


def one_test_suite(question: str, body: str) -> str:
    """A hidden suite of one 1-point test of `question` whose body is `body` (indented 4 spaces)."""
    return (f'import pytest\nimport torch\n\npytestmark = pytest.mark.question("{question}")\n\n\n'
            f"@pytest.mark.points(1)\ndef test_shape(submission):\n{textwrap.indent(textwrap.dedent(body), '    ')}")


WEAK_SUITE = one_test_suite("top_k_filter", """\
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert submission.top_k_filter(logits, 5).shape == (4, 50)
""")


def _kinds(source: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for function, kind, line, mutated, _ in cell_mutants(source):
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
    bodies = {m.source.splitlines()[2].strip() for m in cell_mutants(source)}
    assert "return a[..., n + 1:] * 2" in bodies
    assert "return a[..., n:] / 2" in bodies
    assert "return a[..., n:] * 3" in bodies


def test_ids_are_stable_across_runs_and_edits_elsewhere(make_course, cells):
    root = make_course()
    mutants = generate(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert [m.id for m in mutants] == [m.id for m in generate(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")]
    assert len({m.id for m in mutants}) == len(mutants)
    # a cell inserted above the solution moves it; its mutants keep their ids
    moved = make_course(cells=[cells.markdown("# Preface"), *demo_cells()])
    assert [m.id for m in generate(moved / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")] == [m.id for m in mutants]


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
    # `<=` also drops the k-th logit: not equivalent, and the replay of the suite's own call shows it
    assert verdict.status == "survived"
    assert verdict.message.startswith("not equivalent: differs from the solution on `top_k_filter` as the suite made it")
    assert report.line().startswith(f"{ASSIGNMENT}: 0/1 killed (0%), 1 survived, 0 equivalent, 0 accepted")
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
    assert f"{ASSIGNMENT}: 1/1 killed (100%), 0 survived, 0 equivalent, 0 accepted, 0 timed out, 0 errors (sample of 5)" in out
    assert "per question:\n    top_k_filter: 1/1 killed" in out
    assert "mutation report" in (tmp_path / f"{ASSIGNMENT}_mutants.html").read_text()


SCALE = ('def scale_logits(logits):\n'
         '    """Twice the logits, in float32."""\n'
         '    ### BEGIN SOLUTION\n'
         '    x = logits.float()\n'
         '    return x * 2\n'
         '    ### END SOLUTION\n')
SHAPE_SUITE = one_test_suite("scale_logits", """\
    assert submission.scale_logits(torch.randn(3, 4, generator=torch.Generator().manual_seed(0))).shape == (3, 4)
""")


def test_equivalent_survivor_is_reported_apart_from_a_real_one(make_course, cells):
    """`.float()` of float32 logits changes nothing on any input; `x / 2` passes the weak suite but
    returns other numbers: only the first is equivalent, and it leaves the score's denominator."""
    root = make_course(cells=[cells.readonly("setup", "import torch"), cells.answer("scale_logits", SCALE)],
                       grader_tests={"test_scale.py": SHAPE_SUITE})
    report = run(load_course(root).get(ASSIGNMENT), kinds={".float() removed", "arithmetic swapped"}, jobs=2)
    status = {v.mutant.kind: v for v in report.verdicts}
    assert status[".float() removed"].status == "equivalent"
    assert status["arithmetic swapped"].status == "survived"
    assert "not equivalent" in status["arithmetic swapped"].message
    assert report.judged == 1 and report.score == 0.0
    assert report.line() == (f"{ASSIGNMENT}: 0/1 killed (0%), 1 survived, 1 equivalent, 0 accepted, "
                             "0 timed out, 0 errors")
    text = format_report(report)
    assert text.index("SURVIVED") < text.index("EQUIVALENT")


def test_accepted_survivor_is_reported_with_its_reason(make_course, course_config):
    root = make_course(grader_tests={"test_top_k.py": WEAK_SUITE})
    [swap] = [m for m in generate(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb") if m.kind in SWAP]
    course_config["ASSIGNMENTS"][0]["mutation_accepted"] = {swap.id: "ties at the k-th logit are not graded"}
    report = run(load_course(make_course(config=course_config, grader_tests={"test_top_k.py": WEAK_SUITE}))
                 .get(ASSIGNMENT), kinds=SWAP, jobs=2)
    [verdict] = report.verdicts
    assert (verdict.status, verdict.message) == ("accepted", "ties at the k-th logit are not graded")
    assert report.line().startswith(f"{ASSIGNMENT}: 0/0 killed (100%), 0 survived, 0 equivalent, 1 accepted")
    assert f"ACCEPTED {swap.id}" in format_report(report)


def test_unknown_accepted_id_is_refused_with_one_message(make_course, course_config, capsys):
    course_config["ASSIGNMENTS"][0]["mutation_accepted"] = {"m000000": "harmless"}
    status = main(["--course-root", str(make_course(config=course_config)), "mutants"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "mutation_accepted names m000000, which is not a mutant of the solution" in err


@pytest.mark.parametrize("accepted, problem", [
    ({"m12": "why"}, "'m12' is not a mutant id"),
    ({"m0a1b2c": " "}, "mutation_accepted.m0a1b2c: needs the reason it may survive"),
    (["m0a1b2c"], "mutation_accepted: must be a dict"),
])
def test_accept_list_is_validated(make_course, course_config, accepted, problem):
    course_config["ASSIGNMENTS"][0]["mutation_accepted"] = accepted
    with pytest.raises(ConfigError, match=problem):
        load_course(make_course(config=course_config))


SCALER = ('class Scaler(torch.nn.Module):\n'
          '    """Multiplies by a factor; carries a random parameter it never uses."""\n\n'
          '    def __init__(self, factor):\n'
          '        super().__init__()\n'
          '        ### BEGIN SOLUTION\n'
          '        self.factor = torch.tensor(float(factor)).float()\n'
          '        self.noise = torch.nn.Parameter(torch.randn(2, 3))\n'
          '        ### END SOLUTION\n\n'
          '    def forward(self, x):\n'
          '        ### BEGIN SOLUTION\n'
          '        return x * self.factor\n'
          '        ### END SOLUTION\n\n'
          '    def halved(self):\n'
          '        ### BEGIN SOLUTION\n'
          '        return self.factor / 2\n'
          '        ### END SOLUTION\n')
SCALER_SUITE = one_test_suite("Scaler", """\
    layer = submission.Scaler(3)
    assert layer(torch.randn(2, 4, generator=torch.Generator().manual_seed(0))).shape == (2, 4)
    assert layer.noise.shape == (2, 3)
""")


def test_mutants_reached_only_through_an_object_are_judged_by_replaying_what_the_suite_did_with_it(make_course, cells):
    """The suite builds a Scaler (a handle: it stays in the sandbox), calls it and reads an attribute. The
    replay follows the object: `.float()` dropped in `__init__` changes nothing the suite can see
    (equivalent), `x / factor` in `forward` does (not equivalent, at the call of the object), and a mutant
    of `halved`, which nothing calls, is never run by any replayed step: not judged, whatever it returns."""
    root = make_course(cells=[cells.readonly("setup", "import torch"), cells.answer("Scaler", SCALER)],
                       grader_tests={"test_scaler.py": SCALER_SUITE})
    report = run(load_course(root).get(ASSIGNMENT), kinds={".float() removed", "arithmetic swapped"}, jobs=2)
    verdicts = {v.mutant.function: v for v in report.verdicts}
    assert set(verdicts) == {"Scaler.__init__", "Scaler.forward", "Scaler.halved"}
    assert verdicts["Scaler.__init__"].status == "equivalent", verdicts["Scaler.__init__"].message
    assert verdicts["Scaler.forward"].status == "survived"
    assert verdicts["Scaler.forward"].message.startswith("not equivalent: differs from the solution on `Scaler(...)` as the suite made it")
    assert verdicts["Scaler.halved"].status == "survived"
    assert verdicts["Scaler.halved"].message.startswith(
        "not judged: none of the 9 replayed steps of the suite runs line 18 of `Scaler.halved`")


def test_the_probe_raises_exactly_where_the_changed_statement_would_run():
    """A change inside an `elif` test is probed at the outer `if` (an `elif` cannot become a `raise`); a
    change in a body statement at that statement; code around it stays as it is."""
    source = ("def f(x):\n"
              "    ### BEGIN SOLUTION\n"
              "    y = x + 1\n"
              "    if x > 0:\n"
              "        y = y * 2\n"
              "    elif x < -3:\n"
              "        y = 0\n"
              "    return y\n"
              "    ### END SOLUTION\n")
    probes = {(m.kind, m.source.splitlines()[m.line - 1].strip()): m.probe for m in cell_mutants(source)}
    raised = "raise type('AutograderReachProbe', (BaseException,), {})()"
    body = probes[("arithmetic swapped", "y = y / 2")].splitlines()
    assert body[4] == f"        {raised}" and body[2:4] == ["    y = x + 1", "    if x > 0:"] and body[5] == "    elif x < -3:"
    outer = probes[("comparison swapped", "elif x <= -3:")].splitlines()
    assert outer[3] == f"    {raised}" and outer[4] == "    return y"
    for probe in probes.values():
        ast.parse(probe)

def test_random_variants_also_change_the_layers_a_test_passes():
    """A layer the suite hands over crosses as its parameters; the random runs of the replay perturb them
    (same shapes, dtypes and frozen flags), so a mutant that only misuses the layer's weights is not judged
    equivalent on the suite's one layer."""
    import torch

    from autograder.authoring.mutants import _perturb
    from autograder.grading import wire

    base = torch.nn.Linear(4, 3)
    base.weight.requires_grad_(False)
    ref = wire._argument_leaf(torch.nn.Sequential(base))
    new = _perturb(ref, torch.Generator().manual_seed(0))
    [(name, child)] = new.children.items()
    old = ref.children[name]
    for key in ("weight", "bias"):
        assert child.parameters[key].shape == old.parameters[key].shape
        assert not torch.equal(child.parameters[key], old.parameters[key])
    assert child.frozen == ["weight"] and child.attributes == old.attributes
