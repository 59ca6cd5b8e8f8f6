"""Grading's intake: which team each hand-in belongs to, and what to report about it.

A hand-in's team comes from its LMS folder (where the roster knows it), else from what `autograder pack`
wrote into it; several hand-ins of one team, unknown teams and students listed in two teams are
reported, never silently graded for someone. Reads the roster; imports the course model and hand-in
reading only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course.gradebook import safe_text
from autograder.course.roster import Roster
from autograder.grading.handins import (SubmissionFormatError, find_notebook, notebook_choices, read_manifest,
                                        submission_digest)


@dataclass
class Handin:
    """One graded hand-in with what is known of its authors and its time."""

    path: Path
    team: str | None = None
    members: tuple[str, ...] = ()
    submitted_at: dt.datetime | None = None  # from the LMS, never from the student's own files
    notes: list[str] = field(default_factory=list)
    choices: dict[str, Path] | None = None  # the files to choose among where `path` is not a folder holding them
    due: dt.datetime | None = None  # an extension: this hand-in's own due date, where the LMS or the TA granted one


def read_handins(found: dict[str, Path], notebook_name: str, roster: Roster | None
                 ) -> tuple[dict[str, Handin], list[tuple[str, str]]]:
    """A `Handin` per discovered path: the team its LMS folder is named for (where the roster knows
    it), else the team a packed hand-in names; and the hand-ins whose two disagree."""
    handins = {sid: Handin(path, team=sid if roster and sid in roster.teams else None) for sid, path in found.items()}
    return handins, add_manifests(handins, notebook_name)


def add_manifests(handins: dict[str, Handin], notebook_name: str) -> list[tuple[str, str]]:
    """Take team and members from packed hand-ins where the LMS says nothing; a packed team that
    differs from the one the LMS says (its folder, or who uploaded it) is reported and the LMS's counts,
    so a student cannot hand in as another team. A hand-in that cannot be read is left alone: grading
    records why."""
    problems = []
    for sid, handin in handins.items():
        try:
            manifest = read_manifest(find_notebook(handin.path, notebook_name)) or {}
        except SubmissionFormatError:
            continue
        team, members = manifest.get("team"), manifest.get("members")
        team = safe_text(team.strip()) if isinstance(team, str) and team.strip() else None
        if team and handin.team and team != handin.team:
            problems.append((sid, f"packed for team {team}, but handed in as {handin.team}: graded for {handin.team}"))
        elif team:
            handin.team = team
            if isinstance(members, list):
                handin.members = tuple(safe_text(m) for m in members if isinstance(m, str))
    return problems


def attribute(found: dict[str, Handin], roster: Roster | None, notebook_name: str | None = None,
              ) -> tuple[dict[str, Handin], list[tuple[str, str]]]:
    """Submission id -> hand-in, keyed by team id wherever the team is known, and the problems to report.

    Several hand-ins of one team: the latest (by LMS time, else the last by name) counts, the others are
    reported unless they hold the same notebook (an LMS's copy per member of one group hand-in). A hand-in whose team is unknown keeps its own id and is reported: its grade is not
    given to anyone until a TA fixes the roster or renames it.
    """
    problems: list[tuple[str, str]] = []
    by_team: dict[str, list[tuple[str, Handin]]] = {}
    for sid, h in found.items():
        team = h.team
        if roster and h.team and h.team not in roster.teams:
            problems.append((sid, f"names team {h.team}, which the roster does not know: graded as {sid}, "
                                  "given to no student until the roster lists the team"))
            team = None
        if roster and not team:
            problems.append((sid, "matches no team of the roster: graded, given to no student"))
        if roster and team:
            problems += [(sid, msg) for msg in _member_problems(roster, team, h.members)]
        h.team = team
        by_team.setdefault(team or f"\0{sid}", []).append((sid, h))
    if not roster:
        problems += _students_in_two_teams(found)
    result: dict[str, Handin] = {}
    for key, entries in by_team.items():
        if key.startswith("\0"):
            sid, h = entries[0]
            result[sid] = h
            continue
        entries.sort(key=lambda e: e[1].submitted_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
        (_, latest), older = entries[-1], entries[:-1]
        same = submission_digest(latest.path, notebook_name) if older else None
        older = [(sid, h) for sid, h in older if submission_digest(h.path, notebook_name) != same]
        for sid, _ in older:
            problems.append((sid, f"an earlier hand-in of team {key}; the latest ({shown_time(latest)}) is graded"))
            latest.notes.append(f"team {key} handed in {len(older) + 1} times; the latest counts")
        result[key] = latest
    return result, problems


_COPY = r"(?: \(\d+\)|-Copy\d+| - Copy| copy(?: \d+)?)?"  # Moodle's second upload, Jupyter's and desktops' copies


def choose_notebooks(handins: dict[str, Handin], notebook_name: str, picks: dict[str, str]
                     ) -> list[tuple[str, str]]:
    """Point each hand-in that holds several notebooks at the one to grade, never by guessing.

    The course staff's pick (`picks[submission id] = file`) counts. Else one file that is named as the
    release (or a copy or a renamed upload of it) beside unrelated notebooks is graded and the others are
    noted; several notebooks none of which is named as the release are graded as the error they are
    (unless picked); a hand-in with several versions of the release notebook (`01_demo.ipynb`, Moodle's
    `01_demo (1).ipynb`) is taken out of the batch and reported with every candidate, since nothing
    says which is the latest. Returns the problems to report."""
    version = re.compile(rf"(?:Copy of )?{re.escape(Path(notebook_name).stem)}{_COPY}\.ipynb", re.IGNORECASE)
    problems = []
    for sid, h in list(handins.items()):
        choices = h.choices or notebook_choices(h.path)
        if len(choices) < 2:
            continue
        listed = ", ".join(choices)
        pick = picks.get(sid)
        versions = [name for name in choices if version.fullmatch(Path(name).name)]
        if pick in choices:
            h.path = choices[pick]
            h.notes.append(f"graded {pick}, chosen by the course staff among {listed}")
        elif pick is None and len(versions) == 1:
            h.path = choices[versions[0]]
            h.notes.append(f"graded {versions[0]}; also handed in, not graded: "
                           f"{', '.join(n for n in choices if n != versions[0])}")
        elif pick is None and not versions:
            continue  # none is the assignment's notebook: grading records that the student must hand in one
        else:
            del handins[sid]
            wrong = f"--pick names {pick!r}, which it does not hold; " if pick else ""
            problems.append((sid, f"{wrong}holds {len(choices)} notebooks ({listed}) and nothing says which is "
                                  f"the latest: not graded until you name one, `--pick '{sid}=FILE'`"))
    return problems


PICKS_FILE = "picks.csv"  # in the course folder: the notebook the staff chose of each hand-in holding several


def read_picks(course_root: Path, assignment: str) -> dict[str, str]:
    """The picks of `assignment` kept in the course folder's picks.csv (submission id -> file)."""
    return {r["submission"]: r["file"] for r in _pick_rows(course_root) if r["assignment"] == assignment}


def remember_picks(course_root: Path, assignment: str, picks: dict[str, str]) -> None:
    """Keep `picks` (those `--pick` gave that named a file the hand-in holds) in picks.csv, so a rerun
    grades the same files without repeating them."""
    rows = _pick_rows(course_root)
    kept = {(r["assignment"], r["submission"]): r["file"] for r in rows}
    if not picks or all(kept.get((assignment, sid)) == name for sid, name in picks.items()):
        return
    kept.update({(assignment, sid): name for sid, name in picks.items()})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["assignment", "submission", "file"])
    writer.writerows([a, sid, name] for (a, sid), name in sorted(kept.items()))
    (course_root / PICKS_FILE).write_text(out.getvalue(), encoding="utf-8")


def _pick_rows(course_root: Path) -> list[dict[str, str]]:
    path = course_root / PICKS_FILE
    if not path.exists():
        return []
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        if not {"assignment", "submission", "file"} <= set(reader.fieldnames or ()):
            raise SubmissionFormatError(f"{path}: needs the columns assignment,submission,file; fix or remove it")
        return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SubmissionFormatError(f"{path}: cannot be read ({exc}); fix or remove it") from None


def read_extensions(path: Path, timezone) -> dict[str, dt.datetime]:
    """`--extensions FILE`: a CSV with the columns `who` (a team id or a student id of the roster) and `due`
    (`YYYY-MM-DD HH:MM` in the course's time zone). Every problem is one message naming the row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubmissionFormatError(f"--extensions {path}: cannot be read ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    if not {"who", "due"} <= set(reader.fieldnames or ()):
        raise SubmissionFormatError(f"--extensions {path}: needs the columns who,due (a team or student id, and "
                                    "YYYY-MM-DD HH:MM)")
    extensions = {}
    for line, row in enumerate(reader, start=2):
        who, due = (row["who"] or "").strip(), (row["due"] or "").strip()
        try:
            extensions[who] = dt.datetime.strptime(due, "%Y-%m-%d %H:%M").replace(tzinfo=timezone)
        except ValueError:
            raise SubmissionFormatError(f"--extensions {path}, line {line}: {safe_text(due)!r} is not a date "
                                        "(YYYY-MM-DD HH:MM)") from None
        if not who:
            raise SubmissionFormatError(f"--extensions {path}, line {line}: `who` is empty")
    return extensions


def extend(handin: Handin, due: dt.datetime, source: str) -> None:
    """Give a hand-in a later due date (never an earlier one: two extensions, the later counts)."""
    if handin.due is None or due > handin.due:
        handin.due = due
        handin.notes.append(f"due date extended to {due.isoformat(timespec='minutes')} ({source})")


def apply_extensions(handins: dict[str, Handin], extensions: dict[str, dt.datetime]) -> list[tuple[str, str]]:
    """Extensions for a team or one of its members go to that team's hand-in; ids matching no hand-in are
    reported (a typo must not pass silently)."""
    used = set()
    for handin in handins.values():
        for who in (handin.team, *handin.members):
            if who in extensions:
                extend(handin, extensions[who], "--extensions")
                used.add(who)
    return [(who, "has an extension in --extensions but no hand-in to grade: check the id")
            for who in sorted(set(extensions) - used)]


def shown_time(h: Handin) -> str:
    return h.submitted_at.isoformat(timespec="minutes") if h.submitted_at else "found last"


def _member_problems(roster: Roster, team: str, members: tuple[str, ...]) -> list[str]:
    problems = []
    for student in members:
        other = roster.team_of(student)
        if other is None:
            problems.append(f"lists student {student}, who is not on the roster")
        elif other.id != team:
            problems.append(f"lists student {student} as a member of {team}, but the roster has them in "
                            f"{other.id}: the grade goes to the roster's members of {team} only")
    return problems


def _students_in_two_teams(found: dict[str, Handin]) -> list[tuple[str, str]]:
    teams_of: dict[str, set[str]] = {}
    for h in found.values():
        for student in h.members:
            if h.team:
                teams_of.setdefault(student, set()).add(h.team)
    return [(student, f"is listed in the hand-ins of {len(teams)} teams ({', '.join(sorted(teams))}); "
                      "declare TEAMS in course_config.py so each student belongs to one team")
            for student, teams in sorted(teams_of.items()) if len(teams) > 1]
