"""`autograder similarity`: disguises read the same, template is no evidence, every scope and intake works,
and the report is safe and readable in a real browser."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.cli import main
from autograder.similarity import compare, report, sources
from autograder.similarity.compare import FLOOR, Weights, outlier_fence, shared_weights, side
from autograder.similarity.normalise import units_of_cells
from autograder.similarity.sources import Index, code_lines, graded_names, handin, release_template
from autograder.student.packing import pack
from conftest import ASSIGNMENT, CORRECT, LAPTOP, ROOT, Cells, write_notebook
from test_browser import show

sys.path.insert(0, str(ROOT / "bench"))
from similarity import PARTIAL, RARE, cohort, implementations, notebook, ours  # noqa: E402
from similarity_disguises import DISGUISES, disguise  # noqa: E402

A = "03_efficient_inference_part_1"
RELEASE = ROOT / "release" / A / f"{A}.ipynb"
GRADED = ["absmax_quantize"]

ORIGINAL = '''
def absmax_quantize(x):
    """Symmetric int8."""
    amax = x.abs().max()
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))  # never divide by zero
    codes = torch.round(x / scale).clamp(-127, 127)
    out = []
    for row in codes:
        out.append(row.to(torch.int8))
    return torch.stack(out), scale
'''
DISGUISED = '''
def absmax_quantize(x):
    # my own work
    biggest = x.abs().max()
    unused = 42
    print("debug", biggest)
    if False:
        biggest = None
    s = torch.where(0 < biggest, biggest / 127, torch.ones_like(biggest))
    rows = [r.to(torch.int8) for r in (x / s).round().clamp(-127, 127)]
    return torch.stack(rows), s
'''
WHILE_LOOP = '''
def absmax_quantize(x):
    amax = x.abs().max()
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    i = 0
    total = 0
    while i < len(x):
        total += x[i].sum() * 127
        i += 1
    return total, scale
'''
FOR_LOOP = '''
def absmax_quantize(x):
    total = 0
    scale = torch.where(x.abs().max() > 0, x.abs().max() / 127, torch.ones_like(x.abs().max()))
    for i in range(len(x)):
        total = total + 127 * x[i].sum()
    return total, scale
'''


def tokens(code: str) -> list[list[str]]:
    return [t for u in units_of_cells(["import torch", code], GRADED) for t, _ in u.streams]


def test_disguises_read_the_same_and_what_matters_does_not():
    assert tokens(DISGUISED) == tokens(ORIGINAL)  # names, comments, dead code, order, comprehension, merge
    assert tokens(WHILE_LOOP) != tokens(FOR_LOOP)  # the repeated `x.abs().max()` is not the temporary
    assert tokens(WHILE_LOOP.replace("    amax = x.abs().max()\n", "").replace("amax", "x.abs().max()")) \
        == tokens(FOR_LOOP)  # counting while == for over range, `+=` spelled out, operands sorted
    for changed in (ORIGINAL.replace("127", "128", 1), ORIGINAL.replace("x / scale", "x * scale"),
                    ORIGINAL.replace("torch.round", "torch.floor")):
        assert tokens(changed) != tokens(ORIGINAL)  # constants, operators and library calls are kept


def test_f_and_torch_nn_functional_are_one_name():
    plain = "def f(x):\n    return torch.nn.functional.softmax(x, -1)\n"
    aliased = "import torch.nn.functional as F\ndef f(x):\n    return F.softmax(x, -1)\n"
    assert units_of_cells(["import torch", plain], ["f"])[0].streams == units_of_cells([aliased], ["f"])[0].streams


def test_a_statement_met_before_reads_as_its_imports_say():
    """Tokens are remembered by a statement's text; the imports in force are part of what is remembered."""
    code = "def f(x):\n    return F.softmax(x, -1)\n"
    imported = units_of_cells(["import torch.nn.functional as F", code], ["f"])[0].streams
    undefined = units_of_cells([code], ["f"])[0].streams
    assert "torch.nn.functional.softmax" in imported[0][0] and "torch.nn.functional.softmax" not in undefined[0][0]
    assert units_of_cells(["import torch.nn.functional as F", code], ["f"])[0].streams == imported


def test_a_helper_of_two_graded_functions_reads_the_same_in_both():
    """A statement is put in canonical form once, however many units hold it."""
    helper = "def helper(x):\n    unused = 3\n    t = x * 127\n    return t.round()\n"
    units = units_of_cells([helper, "def f(x):\n    return helper(x)\n", "def g(x):\n    return helper(x) + 1\n"],
                           ["f", "g"])
    assert [u.name for u in units] == ["f", "g"]
    assert units[0].streams[1] == units[1].streams[1] and "C:127.0" in units[0].streams[1][0]
    assert "C:3.0" not in units[0].streams[1][0]  # the dead assignment went in both


def course_cli(*args, root: Path = ROOT) -> int:
    return main(["--course-root", str(root), *map(str, args)])


NAMES = {n for task in json.loads(RELEASE.read_text())["metadata"]["autograder"]["graded"].values() for n in task
         if "." not in n}


def write_team(folder: Path, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{A}.ipynb"
    nbformat.write(notebook(RELEASE, code, sorted(NAMES)), path)
    return path


@pytest.fixture(scope="module")
def impls():
    return implementations(A)


def test_the_copy_ranks_first_and_template_is_no_evidence(tmp_path, impls, capsys):
    """Folders, a packed .zip and a bare notebook, as `grade` reads them; a disguised copy tops the
    ranking; two teams that only kept the release's code share nothing."""
    cohort_dir = tmp_path / "handins"
    write_team(cohort_dir / "loops", impls["loops"])
    write_team(cohort_dir / "compact", impls["compact"])
    copied = write_team(tmp_path / "work", disguise(impls["loops"], DISGUISES["all combined"], 7, NAMES))
    pack(copied, "copycats", [], cohort_dir / "copycats.zip")
    nbformat.write(nbformat.read(RELEASE, as_version=4), cohort_dir / "untouched_a.ipynb")
    nbformat.write(nbformat.read(RELEASE, as_version=4), cohort_dir / "untouched_b.ipynb")
    out = tmp_path / "report"
    assert course_cli("similarity", A, cohort_dir, "--output", out, "--index", tmp_path / "index.db") == 0
    rows = list(csv.DictReader((out / f"{A}_similarity.csv").open()))
    assert {rows[0]["team"], rows[0]["other"]} == {"copycats", "loops"}
    assert float(rows[0]["score"]) > 0.9 > 0.5 > max(float(r["score"]) for r in rows[1:])
    untouched = next(r for r in rows if {r["team"], r["other"]} == {"untouched_a", "untouched_b"})
    assert float(untouched["score"]) == 0.0  # the whole release is template
    data = json.loads((out / f"{A}_similarity.json").read_text())
    assert data["teams"] == 5 and len(data["pairs"]) == 10
    top = data["pairs"][0]
    assert top["functions"] and top["longest"][2] >= 2 and top["functions"][0]["marked"][0]


def test_past_hand_ins_are_indexed_once_and_public_code_is_found(tmp_path, impls, capsys):
    past = tmp_path / "2026"
    for i, style in enumerate(sorted(impls)):
        write_team(past / f"old_{i}", impls[style])
    public = tmp_path / "public" / "solutions"
    public.mkdir(parents=True)
    compact = impls["compact"]
    (public / "blog_post.py").write_text(compact[compact.index("def zeropoint_quantize"):
                                                compact.index("def zeropoint_dequantize")])
    team = write_team(tmp_path / "cohort" / "team_x", disguise(impls["loops"], DISGUISES["renamed identifiers"], 3, NAMES))
    # team_x's zeropoint_quantize comes from the blog post
    nb = nbformat.read(team, as_version=4)
    cell = next(c for c in nb.cells if "def zeropoint_quantize" in c.source)
    cell.source = (public / "blog_post.py").read_text().replace("lo, hi", "low_v, high_v").replace("lo)", "low_v)")
    nbformat.write(nb, team)
    write_team(tmp_path / "cohort" / "team_y", impls["compact"].replace("zeropoint_quantize(x):", "zeropoint_quantize(x):\n    pass"))
    args = ["similarity", A, tmp_path / "cohort", "--past", past, "--public", tmp_path / "public",
            "--output", tmp_path / "out", "--index", tmp_path / "index.db"]
    assert course_cli(*args) == 0
    first = capsys.readouterr().out
    assert "2 hand-ins, 1 pairs" in first and "6 earlier hand-ins, 1 public files (9 read, 0 from the index" in first
    data = json.loads((tmp_path / "out" / f"{A}_similarity.json").read_text())
    best_past = data["past_matches"][0]
    assert (best_past["a"], best_past["b"]) == ("team_x", "2026/old_3") and best_past["score"] > 0.9  # old_3: loops
    public_x = [m for m in data["public_matches"] if m["a"] == "team_x"]
    assert public_x[0]["best_unit"] == "zeropoint_quantize" and public_x[0]["score"] > 0.5
    assert public_x[0]["functions"][0]["other"] == "zeropoint_quantize"

    assert course_cli(*args) == 0
    assert "(0 read, 9 from the index" in capsys.readouterr().out
    write_team(past / "old_0", impls["compact"] + "\n\ndef extra():\n    return 1\n")
    assert course_cli(*args) == 0
    assert "(1 read, 8 from the index" in capsys.readouterr().out


def test_a_moodle_download_is_read_as_grade_reads_it(make_course, course_config, tmp_path, capsys):
    import datetime as dt

    from test_moodle import BERLIN, TEAMS, WRONG, entry, notebook, person, worksheet, write_zip

    course_config["TEAMS"] = TEAMS
    root = make_course(config=course_config)
    write_notebook(root / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", [
        Cells.readonly("setup", "import torch"),
        Cells.answer("top_k_filter", 'def top_k_filter(logits, k):\n    """Keep the k largest."""\n'
                                     "    raise NotImplementedError()")])
    at = {"1001": dt.datetime(2027, 4, 26, 10, 0, tzinfo=BERLIN), "1002": dt.datetime(2027, 4, 27, 23, 0, tzinfo=BERLIN),
          "2001": dt.datetime(2027, 4, 27, 22, 0, tzinfo=BERLIN)}
    files = {entry(person("1001"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "zoe", WRONG),
             entry(person("1002"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "jose", CORRECT),
             entry(person("2001"), "file", f"{ASSIGNMENT}.ipynb", "4.1", True): notebook(tmp_path, "ana", CORRECT)}
    download = write_zip(tmp_path / "LLM-01-42.zip", files)
    sheet = worksheet(tmp_path / "Grades-LLM-01.csv", at)
    assert course_cli("similarity", ASSIGNMENT, download, "--moodle-worksheet", sheet, "--output", tmp_path / "out",
                      "--index", tmp_path / "i.db", "--gradebook", tmp_path / "course" / "gradebook.db", root=root) == 0
    out = capsys.readouterr()
    assert "3 hand-ins" not in out.out and "2 hand-ins, 1 pairs" in out.out  # team01's earlier hand-in is not compared
    assert "Zoë Brontë_1001: an earlier hand-in of team team01" in out.err
    rows = list(csv.DictReader((tmp_path / "out" / f"{ASSIGNMENT}_similarity.csv").open()))
    assert [(r["team"], r["other"], r["score"]) for r in rows] == [("team01", "team02", "1.0000")]  # both CORRECT
    assert CORRECT  # what both teams handed in last


def test_nothing_to_compare_is_one_message(tmp_path, capsys):
    assert course_cli("similarity", A, "--output", tmp_path) == 2
    assert "name the hand-ins to compare" in capsys.readouterr().err
    assert course_cli("similarity", A, tmp_path / "missing", "--output", tmp_path) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["all combined", PARTIAL])
def test_every_copy_ranks_above_every_independent_pair(tmp_path, kind):
    """The bench's goal on one assignment: disguised and partial copies above all independent work."""
    copies, sources = cohort(A, kind, tmp_path)
    scores = ours(A, tmp_path)
    positive = [scores[frozenset(c)] for c in copies]
    independent = [s for pair, s in scores.items() if not set.intersection(*(sources[n] for n in pair))]
    assert len(positive) == 6 and len(independent) >= 40
    assert min(positive) > max(independent)


def test_a_kept_comment_and_constant_are_found_in_every_pair_that_shares_them(tmp_path):
    """Rare lines are found for every pair, not only the pairs shown side by side: a rewrite that kept
    another team's comment and odd constant scores low but names the two lines."""
    copies, sources_of = cohort(A, RARE, tmp_path)
    rare: dict = {}
    scores = ours(A, tmp_path, rare)
    assert len(scores) > compare.DETAILED  # more pairs than are detailed
    assert all(rare[frozenset(c)] == 2 for c in copies)
    independent = [pair for pair in scores if not set.intersection(*(sources_of[n] for n in pair))]
    assert independent and all(rare[pair] == 0 for pair in independent)


def test_rare_lines_are_comments_and_odd_constants_not_plain_code():
    lines = code_lines(["return logits / temperature\nscale = amax / 127  # never zero, see the lectrue\n"
                        "EPS = 3.7e-07\nx = torch.zeros(4096, 1_000_000) + 1e-6\nname = 'a # not a comment'\n"])
    assert lines == ["EPS = 3.7e-07", "scale = amax / 127 # never zero, see the lectrue"]


def test_where_most_pairs_share_nothing_a_shared_line_is_no_outlier():
    """The quartiles of a cohort of mostly unrelated teams are 0: the fence alone would flag anything."""
    scores = [0.0] * 40 + [0.05, 0.2, 0.35, 0.9]
    fence = outlier_fence(scores)
    assert fence == FLOOR and [s for s in scores if s > fence] == [0.9]
    spread = [i / 100 for i in range(100)] * 2  # a cohort whose quartiles set a fence above the floor
    assert outlier_fence(spread) > FLOOR


def test_posting_lists_add_up_what_pairwise_intersections_do(tmp_path, impls):
    """The inverted index finds, for every pair and function, the weight of the fingerprints both hold."""
    graded = graded_names(RELEASE)
    template = release_template(RELEASE.parent, RELEASE.name, graded)
    wanted = []
    for i, style in enumerate(sorted(impls)):
        for j, code in enumerate((impls[style], disguise(impls[style], DISGUISES["all combined"], i, NAMES))):
            wanted.append(handin(write_team(tmp_path / f"{style}_{j}", code), RELEASE.name, graded, f"{style}_{j}"))
    docs = Index(None).documents(wanted)
    weigh = Weights(docs, template)
    sides = [side(d, template, weigh) for d in docs]
    found = shared_weights(sides[:4], sides, weigh)
    pairwise = shared_weights(sides, sides, weigh, pairwise=True)
    for i, a in enumerate(sides[:4]):
        for j, b in enumerate(sides):
            expected = {u: sum(map(weigh, a.units[u] & b.units[u])) for u in a.units if a.units[u] & b.units.get(u, set())}
            assert found.get((i, j), {}) == pytest.approx(expected)
            if j > i:
                assert pairwise.get((i, j), {}) == pytest.approx(expected)
    assert (0, 1) in found and (1, 0) not in pairwise


def test_many_files_are_read_on_every_core_as_one_by_one(tmp_path, impls, monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to read in parallel")
    graded = graded_names(RELEASE)
    wanted = [handin(write_team(tmp_path / f"t{i}", disguise(impls["loops"], DISGUISES["renamed identifiers"], i, NAMES)),
                     RELEASE.name, graded, f"t{i}") for i in range(6)]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / f"{A}.ipynb").write_text("{not json")
    wanted.append(handin(tmp_path / "broken", RELEASE.name, graded, "broken"))
    one_by_one = Index(None).documents(wanted)
    monkeypatch.setattr(sources, "PARALLEL_FROM", 2)
    started = []
    real = sources.ProcessPoolExecutor
    monkeypatch.setattr(sources, "ProcessPoolExecutor", lambda n: started.append(n) or real(n))
    index = Index(tmp_path / "index.db")
    parallel = index.documents(wanted)
    assert started == [2] and index.read == 6
    assert [d if isinstance(d, str) else d.to_json() for d in parallel] == \
        [d if isinstance(d, str) else d.to_json() for d in one_by_one]
    assert isinstance(parallel[-1], str) and "JSON" in parallel[-1]


def test_only_the_top_matches_are_detailed_and_every_match_is_written(tmp_path, impls, monkeypatch):
    """Side by side for the highest matches, a page of a few rows, every pair in the CSV and JSON."""
    monkeypatch.setattr(compare, "DETAILED", 2)
    monkeypatch.setattr(report, "DETAILED", 2)
    monkeypatch.setattr(report, "TABLE_ROWS", 3)
    for i, style in enumerate(sorted(impls)[:5]):
        write_team(tmp_path / "handins" / style, impls[style])
    assert course_cli("similarity", A, tmp_path / "handins", "--output", tmp_path / "out", "--index", tmp_path / "i.db") == 0
    data = json.loads((tmp_path / "out" / f"{A}_similarity.json").read_text())
    assert len(data["pairs"]) == 10 and [bool(m["functions"]) for m in data["pairs"]] == [True] * 2 + [False] * 8
    assert len(list(csv.DictReader((tmp_path / "out" / f"{A}_similarity.csv").open()))) == 10
    page = (tmp_path / "out" / f"{A}_similarity.html").read_text()
    assert page.count('<details id="cohort-') == 2 and "7 more pairs in the CSV and JSON" in page


# ------------------------------------------------------------------------------ in a real browser


PAYLOADS = {"team": "<img src=x onerror=alert(1)>", "file": "<svg onload=alert(2)>",
            "code": "# </div></pre><script>alert(3)</script>\nBAD = '<img src=y onerror=alert(4)>'\n"}


def test_the_report_escapes_student_text_in_chromium(tab, tmp_path, impls):
    page, _ = tab
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    cohort_dir = tmp_path / "handins"
    write_team(cohort_dir / PAYLOADS["team"], PAYLOADS["code"] + impls["loops"])
    nb = write_team(tmp_path / "other", PAYLOADS["code"] + disguise(impls["loops"], DISGUISES["reordered statements"],
                                                                    1, NAMES))
    nb.rename(cohort_dir / f"{PAYLOADS['file']}.ipynb")
    write_team(cohort_dir / "honest", impls["compact"])
    assert course_cli("similarity", A, cohort_dir, "--output", tmp_path / "out", "--index", tmp_path / "i.db") == 0
    report = tmp_path / "out" / f"{A}_similarity.html"
    assert show(tab, report, widths=[LAPTOP]) == []  # an injected <img src=x> would fail to load
    assert dialogs == []
    assert page.eval_on_selector_all("img, script, svg [onload]", "els => els.length") == 0
    first = page.eval_on_selector("table.matches tr:nth-child(2)", "r => [r.cells[0].innerText, r.cells[1].innerText]")
    assert sorted(first) == sorted([PAYLOADS["team"], PAYLOADS["file"]])
    assert "BAD = '<img src=y onerror=alert(4)>'" in page.inner_text("details#cohort-1[open]")
    assert page.locator("details#cohort-1 .code .shared").count() > 5
    assert "shows similarity, not a verdict" in page.inner_text(".verdict")


def test_the_report_of_the_bundled_samples_in_chromium(tab, tmp_path):
    samples = ROOT / "samples" / A
    assert course_cli("similarity", A, samples, "--output", tmp_path, "--index", tmp_path / "i.db") == 0
    data = json.loads((tmp_path / f"{A}_similarity.json").read_text())
    assert show(tab, tmp_path / f"{A}_similarity.html", widths=[LAPTOP]) == []
    page, _ = tab
    rows = page.eval_on_selector_all("table.matches tr:has(td)", "rows => rows.map(r => [r.cells[0].innerText, "
                                                                  "r.cells[1].innerText, r.cells[2].innerText])")
    assert rows == [[m["a"], m["b"], f"{m['score']:.2f}"] for m in data["pairs"]]
    bars = page.eval_on_selector_all("#histogram rect", "rs => rs.map(r => +r.dataset.count)")
    assert sum(bars) == len(data["pairs"]) == len(list(samples.glob("*.ipynb"))) * (len(list(samples.glob("*.ipynb"))) - 1) // 2
    assert page.locator("details.pair").count() == sum(1 for m in data["pairs"] if m["functions"])
    if data["fence"] is not None:
        assert f"never below {FLOOR:.2f}" in page.inner_text("body")
