"""The exported pages as students and instructors see them, in a real browser.

Every feedback page and summary of the graded samples is opened in headless Chromium: it shows what
the gradebook holds (score, one row per check with its result), logs no console error, loads every
image, and fits the window (a long message wraps instead of widening the page). Playwright drives
the system's chromium, Debian's package, which `make test` installs; no browser is downloaded.
"""

from __future__ import annotations

import re

import pytest
from conftest import LAPTOP, PHONE

from autograder.exports.grades import check_title
from autograder.course.gradebook import Gradebook
from autograder.exports.manual import with_manual_scores

def show(tab, path, widths=(LAPTOP, PHONE)) -> list[str]:
    """Load `path` in `tab`; what went wrong, from loading to the layout at each window width."""
    page, problems = tab
    problems.clear()
    page.goto(path.as_uri(), wait_until="load")
    found = problems + [f"image not shown: {src}" for src in page.eval_on_selector_all(
        "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")]
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        found += [f"{overflow} px wider than a {width} px window"] if overflow > 0 else []
    return found


def test_a_broken_page_is_caught(tab, tmp_path):
    page = tmp_path / "broken.html"
    # 100 characters of monospace: about 800 px, wider than a phone, narrower than a laptop.
    page.write_text('<img src="missing.png"><pre>' + "x" * 100 + '</pre><script>console.error("boom"); nope()</script>')
    found = show(tab, page)
    assert sorted(p.split(":")[0] for p in found[:-1]) == [
        "console error", "console error", "image not shown", "not loaded", "script error"]  # the 404 logs one
    assert re.fullmatch(r"\d+ px wider than a 400 px window", found[-1])


def exported(sample_batch) -> dict:
    """What the pages show: each graded sample's checks and one per hand-graded cell (a reflection)."""
    with Gradebook.open(sample_batch.gradebook) as gradebook:
        return {s.submission_id: s for s in with_manual_scores(gradebook, sample_batch.assignment)}


@pytest.mark.slow
def test_feedback_pages_show_every_check_cleanly(tab, sample_batch, sample_pages):
    assignment, results = sample_batch.assignment, exported(sample_batch)
    by_title = {f"{assignment.id}: feedback for {sid}": sub for sid, sub in results.items()}
    page, _ = tab
    problems, shown = {}, {}
    for path in sample_pages.feedback:
        problems[path.name] = show(tab, path)
        sub = by_title[page.title()]
        rows = page.eval_on_selector_all("tr:has(td)",
                                         "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].className])")
        shown[sub.submission_id] = (page.inner_text("h1"), page.locator(".score").all_inner_texts(),
                                    sorted(map(tuple, rows)))
    assert {name: p for name, p in problems.items() if p} == {}
    score = {sid: [f"{sub.earned:g} of {sub.possible:g} points"] if sub.status == "graded" else []
             for sid, sub in results.items()}  # a notebook that could not be read has no score line
    checks = {sid: sorted((check_title(t.test_id), t.status) for t in sub.results) for sid, sub in results.items()}
    assert shown == {sid: (assignment.title, score[sid], checks[sid]) for sid in results}


@pytest.mark.slow
def test_the_summary_shows_its_plots_and_every_test(tab, sample_batch, sample_pages):
    assert show(tab, sample_pages.summary, widths=[LAPTOP]) == []  # read at a desk, not on a phone
    page, _ = tab
    assert page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)") == [700, 700]  # 7 in at 100 dpi
    tests = {t.test_id for sub in exported(sample_batch).values() if sub.status == "graded" for t in sub.results}
    rows = page.eval_on_selector_all("tr:has(td)", "rows => rows.map(r => r.cells[0].innerText)")
    assert sorted(rows) == sorted(tests)
    assert sample_batch.assignment.id in page.inner_text("h1")
