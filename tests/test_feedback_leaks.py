"""No feedback page gives the hidden suite away.

A leak would look like a pytest traceback in a message (lines of the hidden test, its file name) or
the repr of a reference result (`tensor([[0.1234, -0.5678, ...]])`). Every sample of every
assignment is graded, its pages exported, and each page is searched for any non-trivial line of
`grader_tests/<a>/`, any of its file names, and any run of more distinct numbers than a message shows
(a message names single values: the worst element, its index, a shape). Numbers the suite writes
literally, such as the input positions a message names, are shown by design.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Shorter lines (`else:`, `return out`) could come up in any sentence; every real test has longer ones.
MIN_LINE_CHARS = 12
_TRIVIAL_LINE = re.compile(r"(import |from \S+ import |#)|[\W_]*$")
# A number as a repr or a message writes it; not the digits of a word such as `qwen2`.
_NUMBER = r"(?<![\w.])-?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan)(?![\w.])"
_BETWEEN_NUMBERS = r"(?:[\s,\[\]()]|\.\.\.)+"
# torch shortens a large tensor to three values each side of `...`: six values are a repr's minimum. A
# run of one repeated value (`batch sizes [1, 1, 1, 1, 1, 1]`) tells no more than that value.
MIN_DISTINCT_IN_A_LEAK = 6
NUMBER_RUN = re.compile(rf"{_NUMBER}(?:{_BETWEEN_NUMBERS}{_NUMBER}){{{MIN_DISTINCT_IN_A_LEAK - 1},}}")


@dataclasses.dataclass(frozen=True)
class HiddenSuite:
    lines: frozenset[str]  # stripped source lines a leak would show
    file_names: frozenset[str]
    source: str  # every file: numbers written here are the suite's inputs, not results it computes

    @classmethod
    def of(cls, assignment_id: str) -> HiddenSuite:
        lines, sources = set(), []
        files = sorted((ROOT / "grader_tests" / assignment_id).rglob("*.py"))
        for path in files:
            source = path.read_text()
            sources.append(source)
            docstrings = set()  # a test's docstring is the message of its failed bare assert
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                    doc = node.body[0]
                    docstrings.update(range(doc.lineno, doc.end_lineno + 1))
            lines.update(line.strip() for number, line in enumerate(source.splitlines(), 1)
                         if number not in docstrings and len(line.strip()) >= MIN_LINE_CHARS
                         and not _TRIVIAL_LINE.match(line.strip()))
        return cls(frozenset(lines), frozenset(p.name for p in files), "\n".join(sources))

    def leaks(self, page: str) -> list[str]:
        """What of the suite `page` (HTML) shows beyond its messages."""
        text = html.unescape(page)
        found = [f"source line: {line}" for line in sorted(self.lines) if line in text]
        found += [f"file name: {name}" for name in sorted(self.file_names) if name in text]
        found += [f"run of numbers: {run[:200]}" for run in map(re.Match.group, NUMBER_RUN.finditer(text))
                  if len(set(re.findall(_NUMBER, run))) >= MIN_DISTINCT_IN_A_LEAK and run not in self.source]
        return found


@pytest.fixture(scope="module")
def suite_01() -> HiddenSuite:
    return HiddenSuite.of("01_intro")


def test_every_hidden_suite_has_lines_to_look_for():
    for assignment in sorted(p.name for p in (ROOT / "grader_tests").iterdir() if p.is_dir()):
        suite = HiddenSuite.of(assignment)
        assert len(suite.lines) > 50 and any(n.startswith("test_") for n in suite.file_names), assignment


def test_a_traceback_of_a_hidden_test_is_a_leak(suite_01):
    """What pytest's report of a failed assert shows, pasted into a message."""
    source = (ROOT / "grader_tests" / "01_intro" / "test_intro_top_k.py").read_text()
    body = source[source.index("def test_keeps_ties_with_the_kth_largest"):].split("\n\n")[0]
    traceback = (f"grader_tests/01_intro/test_intro_top_k.py:34: in test_keeps_ties_with_the_kth_largest\n"
                 f"{textwrap.indent(body, '    ')}\nE   AssertionError")
    page = f"<td class=\"failed\">failed<pre>{html.escape(traceback)}</pre></td>"
    found = suite_01.leaks(page)
    assert "file name: test_intro_top_k.py" in found
    assert ("source line: logits = torch.tensor([[3.0, 2.0, 0.5, 2.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])"
            in found)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (4, 2000)])
def test_the_repr_of_a_reference_tensor_is_a_leak(suite_01, shape):
    expected = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    page = f"<pre>top_k_filter(random logits [4, 64], k=5): expected {html.escape(repr(expected))}</pre>"
    assert [f for f in suite_01.leaks(page) if f.startswith("run of numbers: ")]


def test_what_messages_show_is_not_a_leak(suite_01):
    messages = [
        "top_k_filter(random logits [4, 64], k=1): token 30 in row 0 should have been set to -inf but was kept",
        "result: 3 of 256 elements (1.2%) differ beyond tolerance; max abs error 0.01 at [0, 3, 5] (got 1.5, "
        "expected 1.49); max rel error 0.0067; tolerance rtol 0.0001, atol 1e-05 (fp32)",
        "top_k_filter([[3, 2, 0.5, 2, 1, 2], [1, 1, 1, 1, 1, 1]], k=2): token 5 in row 0 should have been set "
        "to -inf but was kept",  # the input, as the suite names it
        "greedy_generate called the model with batch sizes [1, 1, 1, 1, 1, 1, 1, 1] for 3 prompts",
        "check failed: A batch of one row, and k >= vocab: nothing may be removed (torch.topk alone would fail).",
    ]
    assert [suite_01.leaks(f"<pre>{html.escape(m)}</pre>") for m in messages] == [[]] * len(messages)


@pytest.mark.slow
def test_no_feedback_page_shows_hidden_source_or_reference_values(sample_batch, sample_pages):
    suite = HiddenSuite.of(sample_batch.assignment.id)
    assert len(sample_pages.feedback) == len(sample_batch.samples)
    leaks = {page.name: found for page in sample_pages.feedback if (found := suite.leaks(page.read_text()))}
    assert leaks == {}
