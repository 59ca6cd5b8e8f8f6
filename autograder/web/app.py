"""The workspace's pages and the changes graders send.

Teams appear under stable pseudonyms (an HMAC of the team id with a secret kept in the gradebook), also in
every address, until an instructor reveals names for themself. Grading one hand-graded cell walks the
teams in pseudonym order; each save names the version it was made on, and one made on an older version is
refused with both versions shown. Pages show what the exports count: `with_manual_scores` and `grade_of`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from autograder.course.config import Course
from autograder.course.gradebook import Gradebook, StaleVersion
from autograder.exports.formats import page_template
from autograder.exports.grades import check_title, grade_of, grade_status, total_possible, write_summary
from autograder.exports.manual import (MANUAL_PREFIX, answers, cell_text, manual_cells, submitted_cells,
                                       ungraded, with_manual_scores)
from autograder.grading.handins import SubmissionFormatError, graded_name
from autograder.web.security import LOCAL_HOSTS, Guard

STATIC = Path(__file__).parent / "static"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours in tracebacks


def create_app(course: Course, gradebook_path: Path, *, hosts: frozenset[str] = LOCAL_HOSTS,
               plots_dir: Path | None = None) -> Starlette:
    """The workspace over `gradebook_path`; requests must name one of `hosts` (plus the local names)."""
    with Gradebook.open(gradebook_path) as gradebook:  # created or upgraded now, not on the first request
        web_secret = gradebook.setting("web-secret", lambda: secrets.token_hex(32))
    opened = threading.local()

    def book() -> Gradebook:
        """The connection of the thread serving: the server's event loop runs pages one at a time."""
        if not hasattr(opened, "gradebook"):
            opened.gradebook = Gradebook.open(gradebook_path)
        return opened.gradebook
    workspace = _Workspace(course, book, web_secret, plots_dir or gradebook_path.parent / "workspace_plots")
    routes = [
        Route("/", workspace.overview),
        Route("/log", workspace.log),
        Route("/reveal", workspace.reveal, methods=["POST"]),
        Route("/a/{aid}/team/{key}", workspace.team),
        Route("/a/{aid}/team/{key}/override", workspace.override, methods=["POST"]),
        Route("/a/{aid}/team/{key}/regrade", workspace.regrade, methods=["POST"]),
        Route("/a/{aid}/regrade/{rid:int}", workspace.resolve, methods=["POST"]),
        Route("/a/{aid}/plots/{name}", workspace.plot),
        Route("/a/{aid}/grade/{gid}", workspace.first_to_grade),
        Route("/a/{aid}/grade/{gid}/{key}", workspace.grade_page),
        Route("/a/{aid}/grade/{gid}/{key}", workspace.save, methods=["POST"]),
        Route("/a/{aid}/rubric/{gid}", workspace.rubric, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    return Guard(app, graders=lambda token: book().grader_by_token(token), secret=web_secret,
                 allowed_hosts=LOCAL_HOSTS | hosts)


class _Workspace:
    def __init__(self, course: Course, book, secret: str, plots_dir: Path):
        self.course, self.book, self.secret, self.plots_dir = course, book, secret.encode(), plots_dir

    # --- what every page needs

    def assignment(self, request: Request):
        aid = request.path_params["aid"]
        if aid not in self.course.assignments:
            raise HTTPException(404, f"no assignment {aid!r} in this course")
        return self.course.assignments[aid]

    def names(self, aid: str, sids) -> dict[str, str]:
        """submission id -> its pseudonym: the same in every session, unguessable without the gradebook."""
        return {sid: "team-" + hmac.new(self.secret, f"{aid}\0{sid}".encode("utf-8", "backslashreplace"),
                                        hashlib.sha256).hexdigest()[:10] for sid in sids}

    def shown(self, request: Request, names: dict[str, str]) -> dict[str, str]:
        """What the grader sees of each team: its pseudonym, or its name where an instructor revealed names."""
        grader = request.state.grader
        if grader.instructor and grader.reveal_names:
            return {sid: f"{sid} ({key})" for sid, key in names.items()}
        return dict(names)

    def sid_of(self, request: Request, aid: str, sids) -> str:
        key = request.path_params["key"]
        found = [sid for sid, k in self.names(aid, sids).items() if k == key]
        if not found:
            raise HTTPException(404, f"no team {key} in {aid}")
        return found[0]

    def render(self, request: Request, template: str, **values) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        return HTMLResponse(page_template(template).render(grader=request.state.grader, xsrf=request.state.xsrf,
                                                       base=base, course=self.course, **values))

    def instructor(self, request: Request) -> None:
        if not request.state.grader.instructor:
            raise HTTPException(403, "only an instructor may do this")

    async def body(self, request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(400, "the request is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the request is not a JSON object")
        return body

    # --- pages

    async def overview(self, request: Request):
        gb = self.book()
        assignments = []
        for a in self.course.assignments.values():
            subs = with_manual_scores(gb, a)
            names = self.names(a.id, (s.submission_id for s in subs))
            shown = self.shown(request, names)
            records = gb.handins(a.id)
            graded = [s for s in subs if s.status == "graded"]
            waiting = ungraded(graded)
            teams = sorted(({"key": names[s.submission_id], "name": shown[s.submission_id],
                             "status": grade_status(s), "final": grade_of(s, a)[3], "possible": grade_of(s, a)[1]}
                            for s in subs), key=lambda t: t["key"])
            assignments.append({
                "a": a, "teams": teams, "possible": total_possible(a),
                "graded": sum(not s.incomplete for s in graded), "errors": len(subs) - len(graded),
                "needs_gpu": sum(any(r.status == "needs-gpu" and r.points_possible > 0 for r in s.results)
                                 for s in graded),
                "reflections": sum(any(r.status == "needs-grading" and r.points_possible > 0 for r in s.results)
                                   for s in graded),
                "to_check": sum(bool(r.notes) for r in records.values()),
                "cells": [(c, waiting.get(c.grade_id, 0)) for c in manual_cells(a)],
            })
        return self.render(request, "web_overview.html", assignments=assignments)

    async def team(self, request: Request):
        a, gb = self.assignment(request), self.book()
        subs = {s.submission_id: s for s in with_manual_scores(gb, a)}
        sid = self.sid_of(request, a.id, subs)
        sub = subs[sid]
        total, possible, penalty, final = grade_of(sub, a)
        checks = [{"test_id": r.test_id, "title": check_title(r.test_id), "question": r.question, "status": r.status,
                   "earned": r.points_earned, "possible": r.points_possible, "message": r.message,
                   "manual": r.test_id.startswith(MANUAL_PREFIX)} for r in sub.results]
        try:
            cells, unreadable = [_cell_view(c) for c in submitted_cells(sub, a) if isinstance(c, dict)], ""
        except SubmissionFormatError as exc:
            cells, unreadable = [], str(exc)
        record = gb.handins(a.id).get(sid)
        return self.render(request, "web_team.html", a=a, sub=sub,
                           graded_file=graded_name(Path(sub.path), f"{a.id}.ipynb"), key=request.path_params["key"],
                           name=self.shown(request, {sid: request.path_params["key"]})[sid], checks=checks,
                           total=total, possible=possible, penalty=penalty, final=final, status=grade_status(sub),
                           cells=cells, unreadable=unreadable,
                           notes=[n for n in (record.notes if record else "").split("\n") if n],
                           regrades=[r for r in gb.regrades(a.id) if r.submission_id == sid],
                           overrides=gb.overrides(a.id).get(sid, {}))

    async def log(self, request: Request):
        gb, names = self.book(), {}
        entries = gb.log(limit=500)
        for aid in {e.assignment for e in entries}:
            names[aid] = self.shown(request, self.names(aid, {e.submission_id for e in entries if e.assignment == aid}))
        return self.render(request, "web_log.html", entries=entries, names=names)

    async def plot(self, request: Request):
        """The summary's plots, written again when the gradebook changed since."""
        a = self.assignment(request)
        name = request.path_params["name"]
        if name not in ("scores.png", "questions.png"):
            raise HTTPException(404)
        gb = self.book()
        stamp = json.dumps([[(s.submission_id, s.graded_at.isoformat()) for s in gb.submissions(a.id)],
                            gb.log(a.id, limit=1)[0].seq if gb.log(a.id, limit=1) else 0])
        folder = self.plots_dir / a.id
        marker = folder / "stamp.json"
        if not marker.is_file() or marker.read_text() != stamp:
            write_summary(gb, a, folder)
            marker.write_text(stamp)
        return FileResponse(folder / name, media_type="image/png")

    # --- grading by question

    def queue(self, request: Request):
        a, gb = self.assignment(request), self.book()
        cells = {c.grade_id: c for c in manual_cells(a)}
        gid = request.path_params["gid"]
        if gid not in cells:
            raise HTTPException(404, f"{a.id} has no hand-graded cell {gid!r}")
        names = self.names(a.id, gb.graded_ids(a.id))
        order = sorted(names, key=names.get)
        return a, gb, cells[gid], names, order

    async def first_to_grade(self, request: Request):
        a, gb, cell, names, order = self.queue(request)
        if not order:
            raise HTTPException(404, f"no graded hand-in of {a.id} yet")
        scores = gb.manual_scores(a.id)
        first = next((sid for sid in order if cell.grade_id not in scores.get(sid, {})), order[0])
        return RedirectResponse(f"{request.scope.get('root_path', '')}/a/{a.id}/grade/{cell.grade_id}/{names[first]}",
                                303)

    async def grade_page(self, request: Request):
        a, gb, cell, names, order = self.queue(request)
        sid = self.sid_of(request, a.id, order)
        scores = gb.manual_scores(a.id)
        at = order.index(sid)
        done = [cell.grade_id in scores.get(s, {}) for s in order]
        after = order[at + 1:] + order[:at]
        next_ungraded = next((s for s in after if cell.grade_id not in scores.get(s, {})), None)
        answer = answers(gb.get(a.id, sid), a)
        return self.render(
            request, "web_grade.html", a=a, cell=cell, key=names[sid], name=self.shown(request, {sid: names[sid]})[sid],
            answer=answer.get(cell.grade_id, answer.get("", "(no answer cell with this grade id: its metadata was "
                                                                "removed or the cell deleted)")),
            score=scores.get(sid, {}).get(cell.grade_id), rubric=gb.rubric(a.id, cell.grade_id),
            position=at + 1, count=len(order), graded=sum(done),
            previous=names[order[at - 1]] if at > 0 else None,
            next=names[order[at + 1]] if at + 1 < len(order) else None,
            next_ungraded=names[next_ungraded] if next_ungraded else None)

    async def save(self, request: Request):
        a, gb, cell, names, order = self.queue(request)
        sid = self.sid_of(request, a.id, order)
        body = await self.body(request)
        try:
            rubric = [int(i) for i in body.get("rubric", [])]
            adjustment, version = float(body.get("adjustment") or 0), int(body.get("version", 0))
            comment = str(body.get("comment", ""))
            score = gb.save_manual(a.id, sid, cell.grade_id, cell.points, rubric, adjustment, comment,
                                   request.state.grader.name, version)
        except StaleVersion as stale:
            return JSONResponse({"conflict": True, "theirs": _score_json(stale.current, gb.rubric(a.id, cell.grade_id)),
                                 "yours": {"rubric": rubric, "adjustment": adjustment, "comment": comment}}, 409)
        except (TypeError, ValueError) as exc:
            raise HTTPException(400, f"not saved: {exc}") from None
        return JSONResponse(_score_json(score, gb.rubric(a.id, cell.grade_id)))

    async def rubric(self, request: Request):
        self.instructor(request)
        a, gb = self.assignment(request), self.book()
        gid = request.path_params["gid"]
        if gid not in {c.grade_id for c in manual_cells(a)}:
            raise HTTPException(404, f"{a.id} has no hand-graded cell {gid!r}")
        body = await self.body(request)
        label = str(body.get("label", "")).strip()
        try:
            points = float(body.get("points"))
        except (TypeError, ValueError):
            raise HTTPException(400, "points must be a number (negative to deduct)") from None
        if not label:
            raise HTTPException(400, "a rubric item needs a label")
        who = request.state.grader.name
        if body.get("item_id") in (None, ""):
            gb.add_rubric_item(a.id, gid, label, points, who)
            return JSONResponse({"changed": 0})
        try:
            return JSONResponse({"changed": gb.change_rubric_item(a.id, int(body["item_id"]), label, points, who)})
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    # --- the instructor's changes

    async def reveal(self, request: Request):
        self.instructor(request)
        body = await self.body(request)
        self.book().set_reveal_names(request.state.grader.name, bool(body.get("reveal")))
        return JSONResponse({"reveal": bool(body.get("reveal"))})

    def team_check(self, request: Request, body: dict):
        self.instructor(request)
        a, gb = self.assignment(request), self.book()
        sub = gb.get(a.id, self.sid_of(request, a.id, gb.graded_ids(a.id)))
        test_id = str(body.get("test_id", ""))
        known = {r.test_id for r in sub.results} | {f"{MANUAL_PREFIX}{c.grade_id}" for c in manual_cells(a)}
        if test_id not in known:
            raise HTTPException(400, f"no check {test_id!r} in this hand-in")
        return a, gb, sub, test_id

    async def override(self, request: Request):
        body = await self.body(request)
        a, gb, sub, test_id = self.team_check(request, body)
        result = next((r for r in sub.results if r.test_id == test_id), None)
        if result is None:
            raise HTTPException(400, "a hand-graded cell is graded on its grading page, not overridden")
        reason = str(body.get("reason", "")).strip()
        points = body.get("points")
        if points in (None, ""):
            gb.set_override(a.id, sub.submission_id, test_id, None, reason, request.state.grader.name)
            return JSONResponse({"override": None})
        try:
            points = float(points)
        except (TypeError, ValueError):
            raise HTTPException(400, "points must be a number") from None
        if not 0 <= points <= result.points_possible or not reason:
            raise HTTPException(400, f"an override needs points within 0..{result.points_possible:g} and a reason")
        gb.set_override(a.id, sub.submission_id, test_id, points, reason, request.state.grader.name)
        return JSONResponse({"override": points})

    async def regrade(self, request: Request):
        body = await self.body(request)
        a, gb, sub, test_id = self.team_check(request, body)
        text = str(body.get("request", "")).strip()
        if not text:
            raise HTTPException(400, "say what the student asks for")
        return JSONResponse({"regrade": gb.record_regrade(a.id, sub.submission_id, test_id, text,
                                                          request.state.grader.name)})

    async def resolve(self, request: Request):
        self.instructor(request)
        a, gb = self.assignment(request), self.book()
        outcome = str((await self.body(request)).get("outcome", "")).strip()
        if not outcome:
            raise HTTPException(400, "say what was decided")
        try:
            gb.resolve_regrade(a.id, request.path_params["rid"], outcome, request.state.grader.name)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse({"outcome": outcome})


def _score_json(score, rubric) -> dict:
    labels = {i.item_id: i.label for i in rubric}
    return {"points": score.points, "version": score.version, "grader": score.grader, "comment": score.comment,
            "adjustment": score.adjustment, "rubric": list(score.rubric),
            "labels": [labels.get(i, f"item {i}") for i in score.rubric]}


def _cell_view(cell: dict) -> dict:
    """A notebook cell as text to show: its source and its outputs' text; nothing of it is ever run or rendered."""
    outputs = []
    for out in cell.get("outputs", []) if isinstance(cell.get("outputs"), list) else []:
        if not isinstance(out, dict):
            continue
        kind = out.get("output_type")
        if kind == "stream":
            outputs.append(cell_text(out.get("text", "")))
        elif kind == "error":
            outputs.append(_ANSI.sub("", "\n".join(map(str, out.get("traceback") or [])))
                           or f"{out.get('ename')}: {out.get('evalue')}")
        elif isinstance(out.get("data"), dict):
            data = out["data"]
            others = sorted(k for k in data if k != "text/plain")
            outputs.append(cell_text(data.get("text/plain", "")) + (f"\n[{', '.join(others)} not shown]" if others
                                                                      else ""))
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return {"type": str(cell.get("cell_type", "")), "source": cell_text(cell.get("source", "")), "outputs": outputs,
            "grade_id": meta.get("grade_id") if isinstance(meta, dict) else None}
