"""The exported pages as students and instructors see them, in a real browser.

Every feedback page and summary of the graded samples is opened in headless Chromium: it shows what
the gradebook holds (score, one row per check with its result), logs no console error, loads every
image, and fits the window (a long message wraps instead of widening the page). Playwright drives
the system's chromium, Debian's package, which `make test` installs; no browser is downloaded.
"""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import LAPTOP, PHONE
from playwright.sync_api import expect

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


@pytest.fixture
def served(workspace):
    """The workspace served by uvicorn on a free local port, as `autograder serve` runs it."""
    import socket
    import threading
    import time

    import uvicorn

    from autograder.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(workspace.course, workspace.gradebook), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", workspace
    server.should_exit = True
    thread.join(10)


def _grader(browser, url, token):
    """A grader's own browser (its own cookies), logged in through its token link."""
    context = browser.new_context(viewport={"width": LAPTOP, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
    page.goto(f"{url}/?token={token}")
    return context, page, problems


def test_a_grading_session_with_the_keyboard_two_graders_and_the_instructor(browser, served):
    from conftest import ASSIGNMENT

    url, workspace = served
    cell = "reflection_sampling"
    prof_ctx, prof, prof_problems = _grader(browser, url, workspace.tokens["prof"])
    ta1_ctx, ta1, ta1_problems = _grader(browser, url, workspace.tokens["ta1"])
    ta2_ctx, ta2, ta2_problems = _grader(browser, url, workspace.tokens["ta2"])
    # The instructor writes the rubric on the first team's page.
    with prof.expect_navigation():
        prof.click(f"a[href$='/grade/{cell}']")
    for label, points in (("names the trade-off", "1.5"), ("gives an example", "0.5"), ("wrong claim", "-1")):
        prof.fill("#add-item input[name=label]", label)
        prof.fill("#add-item input[name=points]", points)
        with prof.expect_navigation():
            prof.click("#add-item button")
    assert prof.locator("#rubric .label").all_inner_texts() == ["names the trade-off", "gives an example", "wrong claim"]
    # ta1 grades with the keyboard only: items 1 and 2 by their key positions, the next ungraded team with n.
    with ta1.expect_navigation():
        ta1.click(f"a[href$='/grade/{cell}']")
    first = ta1.url
    ta1.keyboard.press("Digit1")
    expect(ta1.locator("#saved")).to_contain_text("version 1")
    ta1.keyboard.press("Numpad2")
    expect(ta1.locator("#saved")).to_contain_text("version 2")
    assert ta1.inner_text("#points") == "2"
    ta1.keyboard.press("c")
    ta1.keyboard.type("clear, with an example")
    ta1.keyboard.press("Escape")
    expect(ta1.locator("#saved")).to_contain_text("version 3")
    ta1.keyboard.press("Shift+Slash")  # "?" on a US layout
    assert ta1.is_visible("#help")
    ta1.keyboard.press("Shift+Slash")
    with ta1.expect_navigation():
        ta1.keyboard.press("n")
    second = ta1.url
    assert second != first
    ta1.keyboard.press("Digit3")  # a wrong claim: -1, kept at 0
    expect(ta1.locator("#saved")).to_contain_text("version 1")
    assert ta1.inner_text("#points") == "0"
    # ta2 opened the first team before ta1's last save and saves on top of version 2: refused, both shown.
    ta2.goto(first)
    ta2.evaluate("document.getElementById('grading').dataset.version = '2'")
    ta2.keyboard.press("Digit3")
    ta2.wait_for_selector("#conflict:not([hidden])")
    assert "clear, with an example" in ta2.inner_text("#theirs") and "wrong claim" in ta2.inner_text("#yours")
    assert "ta1" in ta2.inner_text("#their-grader")
    with ta2.expect_navigation():
        ta2.click("#take-theirs")
    assert ta2.inner_text("#points") == "2"
    # j / k walk the teams; k on the second team is the first again.
    with ta1.expect_navigation():
        ta1.keyboard.press("k")
    assert ta1.url == first
    # The instructor raises item 1 to 2 points: the first team's grade follows (2 + 0.5, kept at 2 of 2).
    prof.goto(first)
    prof.fill(".rubric-edit:nth-of-type(1) input[name=points]", "1")
    with prof.expect_navigation():
        prof.click(".rubric-edit:nth-of-type(1) button")
    assert prof.inner_text("#points") == "1.5"
    # An override and a regrade on a team page.
    prof.goto(f"{url}/")
    prof.click("text=Reveal team names")
    prof.wait_for_selector("text=Hide team names")
    with prof.expect_navigation():
        prof.click("a:has-text('team02')")
    prof.select_option("#override select", "test_top_k.py::test_top_k_on_random_logits")
    prof.fill("#override input[name=points]", "1")
    prof.fill("#override input[name=reason]", "the seed changed")
    with prof.expect_navigation():
        prof.click("#override button")
    prof.select_option("#regrade select", f"manual::{cell}")
    prof.fill("#regrade input[name=request]", "please read our answer again")
    with prof.expect_navigation():
        prof.click("#regrade button")
    prof.fill(".regrades input[name=outcome]", "kept: the answer misses the trade-off")
    with prof.expect_navigation():
        prof.click(".regrades button")
    assert "kept: the answer misses the trade-off" in prof.inner_text(".regrades")
    assert prof_problems == ta1_problems == [] and len(ta2_problems) == 1 and "409 (Conflict)" in ta2_problems[0]
    for context in (prof_ctx, ta1_ctx, ta2_ctx):
        context.close()
    # The exports count what happened.
    from autograder.exports.manual import with_manual_scores

    with Gradebook.open(workspace.gradebook) as gb:
        subs = {s.submission_id: s for s in with_manual_scores(gb, workspace.course.get(ASSIGNMENT))}
        log = gb.log(ASSIGNMENT)
    assert subs["team02"].per_question()["top_k_filter"] == (1.0, 1.0)
    graded_cell = {sid: next(r for r in s.results if r.test_id == f"manual::{cell}") for sid, s in subs.items()}
    assert sorted(r.points_earned for r in graded_cell.values() if r.status == "graded-by-hand") == [0.0, 1.5]
    assert any("regrade requested: please read our answer again -> kept" in r.message for r in graded_cell.values())
    assert {e.grader for e in log} == {"prof", "ta1"} and "rubric-regrade" in {e.action for e in log}


def test_a_hostile_submission_runs_nothing_in_a_graders_browser(browser, served):
    from conftest import HOSTILE_ID

    url, workspace = served
    context, page, problems = _grader(browser, url, workspace.tokens["prof"])
    page.click("text=Reveal team names")
    page.wait_for_selector("text=Hide team names")
    blocked = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and blocked.append(msg.text))
    with page.expect_navigation():
        page.click(f"a:has-text('{HOSTILE_ID[:12]}')")
    assert HOSTILE_ID in page.inner_text("h1")  # shown as text
    assert page.locator("main img, main svg, main iframe, main b, main script").count() == 0
    assert "<script>window.pwned=1</script>" in page.inner_text(".cell")
    page.goto(page.url.replace("/team/", "/grade/reflection_sampling/"))
    assert "<script>window.pwned=1</script> answer" in page.inner_text(".answer")
    assert page.evaluate("window.pwned") is None
    context.close()


def test_requests_without_token_from_another_host_or_another_site_get_nothing(browser, served):
    url, workspace = served
    port = url.rsplit(":", 1)[1]
    stranger = browser.new_context()
    page = stranger.new_page()
    assert page.goto(f"{url}/").status == 403
    # DNS rebinding: the attacker's name now resolves to this machine; even a valid token gets nothing.
    rebinding_browser = browser.browser_type.launch(executable_path=shutil.which("chromium"),
                                                    args=["--host-resolver-rules=MAP attacker.example 127.0.0.1"])
    rebinding = rebinding_browser.new_page()
    answer = rebinding.goto(f"http://attacker.example:{port}/?token={workspace.tokens['prof']}")
    assert answer.status == 403 and "team" not in rebinding.content()
    rebinding_browser.close()
    # A cross-site page posting to the workspace while the instructor is logged in.
    context, prof, _ = _grader(browser, url, workspace.tokens["prof"])
    attacker = context.new_page()
    attacker.set_content('<form method="post" action="' + url + '/reveal" enctype="text/plain">'
                         '<input name=\'{"reveal": true, "x": "\' value=\'"}\'></form>')
    with attacker.expect_navigation() as posted:
        attacker.evaluate("document.forms[0].submit()")
    assert posted.value.status == 403  # SameSite=Strict: the cookie stays home; without it, no XSRF token either
    answered = attacker.evaluate(f"""fetch("{url}/reveal", {{method: "POST", body: '{{"reveal": true}}',
        headers: {{"Content-Type": "application/json"}}, credentials: "include"}}).then(r => r.status, e => "blocked")""")
    assert answered in (403, "blocked")
    with Gradebook.open(workspace.gradebook) as gb:
        assert not any(g.reveal_names for g in gb.graders()) and gb.log() == []
    for c in (stranger, context):
        c.close()
