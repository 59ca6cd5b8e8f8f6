"""The web workspace through Starlette's test client: who may do what, the guards of every request, grading with
versions and rubrics, and that its pages show what the exports count."""

from __future__ import annotations

import csv
import io
import re

import pytest
from starlette.testclient import TestClient

from autograder.course.gradebook import Gradebook
from autograder.exports.grades import export_csv
from autograder.web.app import create_app
from autograder.web.security import HEADERS

from conftest import ASSIGNMENT, HOSTILE_ID, SCRIPT

CELL = "reflection_sampling"


@pytest.fixture
def app(workspace):
    return create_app(workspace.course, workspace.gradebook)


def client(app, workspace, who=None) -> TestClient:
    """A browser of grader `who` (logged in through its token link), or of nobody."""
    c = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    if who:
        login = c.get(f"/?token={workspace.tokens[who]}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    return c


def xsrf(page: str) -> str:
    return re.search(r'<meta name="xsrf" content="([0-9a-f]+)">', page).group(1)


def post(c, url, body, page="/"):
    return c.post(url, json=body, headers={"X-XSRF-Token": xsrf(c.get(page).text)})


def keys(c) -> list[str]:
    """The team pseudonyms of the overview, in its order."""
    return re.findall(rf'/a/{ASSIGNMENT}/team/(team-[0-9a-f]+)"', c.get("/").text)


def test_without_a_valid_token_nothing_is_shown(app, workspace):
    anonymous = client(app, workspace)
    for path in ("/", f"/a/{ASSIGNMENT}/grade/{CELL}", "/log", "/?token=guessed"):
        refused = anonymous.get(path)
        assert refused.status_code == 403 and "team01" not in refused.text
        assert {k: refused.headers[k] for k in HEADERS} == HEADERS  # the refusal too forbids framing and scripts
    assert anonymous.post("/reveal", json={"reveal": True}).status_code == 403


def test_another_host_is_refused_even_with_a_valid_cookie(app, workspace):
    c = client(app, workspace, "prof")
    assert c.get("/").status_code == 200
    rebound = c.get("/", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 403 and "team" not in rebound.text
    assert create_app(workspace.course, workspace.gradebook, hosts=frozenset({"grading.example"})) is not None
    behind_proxy = client(create_app(workspace.course, workspace.gradebook, hosts=frozenset({"grading.example"})),
                          workspace, "prof")
    assert behind_proxy.get("/", headers={"Host": "grading.example"}).status_code == 200


def test_a_post_needs_the_xsrf_token_json_and_our_origin(app, workspace):
    c = client(app, workspace, "prof")
    token = xsrf(c.get("/").text)
    assert c.post("/reveal", json={"reveal": True}).status_code == 403  # the cookie alone is not enough
    assert c.post("/reveal", json={"reveal": True}, headers={"X-XSRF-Token": "0" * 64}).status_code == 403
    assert c.post("/reveal", data={"reveal": "1"}, headers={"X-XSRF-Token": token}).status_code == 415
    assert c.post("/reveal", json={"reveal": True}, headers={"X-XSRF-Token": token,
                                                             "Origin": "http://attacker.example"}).status_code == 403
    other = client(app, workspace, "ta1")
    assert other.post("/reveal", json={"reveal": True}, headers={"X-XSRF-Token": token}).status_code == 403
    assert c.post("/reveal", json={"reveal": True}, headers={"X-XSRF-Token": token}).status_code == 200


def test_teams_are_pseudonyms_until_the_instructor_reveals_names_for_themself(app, workspace):
    prof, ta = client(app, workspace, "prof"), client(app, workspace, "ta1")
    for c in (prof, ta):
        page = c.get("/").text
        assert "team01" not in page and len(set(keys(c))) == 3
    assert keys(prof) == keys(ta) == sorted(keys(ta))  # stable: the same for everyone, in pseudonym order
    assert post(ta, "/reveal", {"reveal": True}).status_code == 403
    assert post(prof, "/reveal", {"reveal": True}).status_code == 200
    assert "team01" in prof.get("/").text and "team01" not in ta.get("/").text
    assert keys(create_app_client := client(create_app(workspace.course, workspace.gradebook), workspace, "ta2")) \
        == keys(ta)  # a restart keeps the pseudonyms
    del create_app_client


def test_student_text_is_escaped_on_every_page(app, workspace):
    prof = client(app, workspace, "prof")
    post(prof, "/reveal", {"reveal": True})
    pages = [prof.get("/").text, *(prof.get(f"/a/{ASSIGNMENT}/team/{k}").text for k in keys(prof)),
             *(prof.get(f"/a/{ASSIGNMENT}/grade/{CELL}/{k}").text for k in keys(prof))]
    joined = "\n".join(pages)
    for payload in (SCRIPT, HOSTILE_ID, "<svg onload", "<iframe", "<b onmouseover"):
        assert payload not in joined
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in joined and "&lt;svg onload=" in joined
    assert joined.count("<script") == len(pages)  # each page's one script: the static file


def test_grading_saves_versions_and_refuses_a_stale_save_showing_both(app, workspace):
    prof, ta1, ta2 = (client(app, workspace, who) for who in ("prof", "ta1", "ta2"))
    first = prof.get(f"/a/{ASSIGNMENT}/grade/{CELL}")
    assert first.status_code == 303
    page = first.headers["location"]
    good = post(prof, f"/a/{ASSIGNMENT}/rubric/{CELL}", {"label": "names the trade-off", "points": "2"}, page)
    assert good.json() == {"changed": 0}
    assert post(ta1, f"/a/{ASSIGNMENT}/rubric/{CELL}", {"label": "x", "points": "1"}, page).status_code == 403
    with Gradebook.open(workspace.gradebook) as gb:
        item = gb.rubric(ASSIGNMENT, CELL)[0].item_id
    saved = post(ta1, page, {"rubric": [item], "adjustment": -0.5, "comment": "ok", "version": 0}, page)
    assert (saved.status_code, saved.json()["points"], saved.json()["version"]) == (200, 1.5, 1)
    stale = post(ta2, page, {"rubric": [], "adjustment": 1, "comment": "mine", "version": 0}, page)
    assert stale.status_code == 409
    assert (stale.json()["theirs"]["grader"], stale.json()["theirs"]["comment"], stale.json()["yours"]["comment"]) \
        == ("ta1", "ok", "mine")
    changed = post(prof, f"/a/{ASSIGNMENT}/rubric/{CELL}", {"item_id": item, "label": "names it", "points": 1.5}, page)
    assert changed.json() == {"changed": 1}
    with Gradebook.open(workspace.gradebook) as gb:
        score = next(iter(gb.manual_scores(ASSIGNMENT).values()))[CELL]
        assert (score.points, score.version, score.grader) == (1.0, 2, "prof")
        assert [e.action for e in gb.log(ASSIGNMENT)][:3] == ["rubric-regrade", "rubric-change", "grade"]
    assert post(ta1, page, {"rubric": [item], "adjustment": 0, "comment": "", "version": 1}, page).status_code == 409
    assert ">next ungraded (n)</a>" in ta1.get(page).text


def test_the_overview_and_team_pages_show_what_the_exports_count(app, workspace):
    prof = client(app, workspace, "prof")
    post(prof, "/reveal", {"reveal": True})
    overview = prof.get("/").text
    failed_key = re.search(r'/team/(team-[0-9a-f]+)">team02', overview).group(1)
    body = {"test_id": "test_top_k.py::test_top_k_on_random_logits", "points": 1, "reason": "seed changed"}
    assert post(prof, f"/a/{ASSIGNMENT}/team/{failed_key}/override", body).status_code == 200
    regrade = post(prof, f"/a/{ASSIGNMENT}/team/{failed_key}/regrade",
                   {"test_id": f"manual::{CELL}", "request": "please read again"}).json()["regrade"]
    assert post(prof, f"/a/{ASSIGNMENT}/regrade/{regrade}", {"outcome": "kept"}).status_code == 200
    with Gradebook.open(workspace.gradebook) as gb:
        out = io.StringIO()
        export_csv(gb, workspace.course.get(ASSIGNMENT), out)
    final = {r["submission"]: r["final"] for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert final["team02"] == "1"
    overview = prof.get("/").text
    for sid, points in final.items():
        shown = re.search(rf'>{re.escape(sid.replace("<", "&lt;").replace(">", "&gt;").replace(chr(34), "&#34;"))}'
                          rf' \(team-[0-9a-f]+\)</a></td><td>[^<]*</td>\s*<td class="n">([0-9.]+) /', overview)
        assert shown and float(shown.group(1)) == float(points), sid
    team = prof.get(f"/a/{ASSIGNMENT}/team/{failed_key}").text
    assert "points set by the course staff: 1 of 1 (seed changed)" in team and "please read again -&gt; kept" in team
    assert 'class="counts"' in overview and '<td class="reflections">3</td>' in overview


def test_import_manual_writes_the_same_scores_the_workspace_grades(app, workspace, tmp_path):
    from autograder.cli import main

    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"submission,grade_id,points,comment\nteam01,{CELL},2,from the sheet\n")
    assert main(["--course-root", str(workspace.course.root), "import-manual", ASSIGNMENT, str(sheet),
                 "--gradebook", str(workspace.gradebook), "--grader", "ta3"]) == 0
    prof = client(app, workspace, "prof")
    post(prof, "/reveal", {"reveal": True})
    key = re.search(r'/team/(team-[0-9a-f]+)">team01', prof.get("/").text).group(1)
    page = prof.get(f"/a/{ASSIGNMENT}/grade/{CELL}/{key}").text
    assert "saved by ta3 (version 1)" in page and "from the sheet" in page and 'data-version="1"' in page
    with Gradebook.open(workspace.gradebook) as gb:
        assert [(e.grader, e.action) for e in gb.log(ASSIGNMENT)] == [("ta3", "import")]


def test_add_grader_prints_a_link_whose_token_logs_in_and_renewing_revokes_it(app, workspace, capsys):
    from autograder.cli import main

    argv = ["--course-root", str(workspace.course.root), "serve", "--gradebook", str(workspace.gradebook),
            "--add-grader", "ta9"]
    assert main(argv) == 0
    link = re.search(r"open (http://127\.0\.0\.1:8765/\?token=(\S+))", capsys.readouterr().out)
    c = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    assert c.get(f"/?token={link.group(2)}").status_code == 303 and c.get("/").status_code == 200
    assert "ta9" in c.get("/").text and "(instructor)" not in c.get("/").text
    assert main(argv) == 0
    assert c.get("/").status_code == 403  # the old token no longer works
