"""Teams and their members: who a hand-in belongs to, and one grade per student.

The course works in teams; `course_config.py` declares them in `TEAMS`, inline or as a CSV file
(columns `team`, `student_id`, `name`, optionally `email`). A hand-in is attributed to a team by
the team id a packed hand-in names, by an LMS participant on the roster, or by its folder name; a
hand-in that names an unknown team or lists a student of another team is reported, never guessed.
"""

from __future__ import annotations

import csv
import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from autograder.gradebook import safe_text
from autograder.handins import SubmissionFormatError, find_notebook, read_manifest

DEFAULT_MAX_TEAM_SIZE = 3


class RosterError(Exception):
    """The roster cannot be used as declared; the message names the file and the entry."""


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    email: str = ""


@dataclass(frozen=True)
class Team:
    id: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class Roster:
    teams: dict[str, Team]

    def team_of(self, student_id: str) -> Team | None:
        return next((t for t in self.teams.values() if any(m.id == student_id for m in t.members)), None)

    def students(self) -> list[tuple[Team, Member]]:
        return [(t, m) for t in self.teams.values() for m in t.members]

    def find(self, *, name: str = "", email: str = "") -> Member | None:
        """The member with this e-mail address, else with exactly this name (accents and case as
        typed in different systems are compared in one normal form)."""
        people = [m for _, m in self.students()]
        if email:
            found = [m for m in people if m.email and _same(m.email, email)]
            if len(found) == 1:
                return found[0]
        found = [m for m in people if name and _same(m.name, name)]
        return found[0] if len(found) == 1 else None

    def team_of_person(self, *, name: str = "", email: str = "") -> tuple[Member | None, Team | None]:
        """The member an LMS lists by name and e-mail (`find`), and their team."""
        member = self.find(name=name, email=email)
        return member, self.team_of(member.id) if member else None


def _same(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(unicodedata.normalize("NFC", s).casefold().split())

    return norm(a) == norm(b)


def load_roster(value, root: Path, config_name: str, max_team_size: int) -> Roster:
    """`TEAMS` of the config: a list of {"id", "members": [{"id", "name", "email"?}]} or a CSV path."""
    if isinstance(value, str):
        rows, where = _csv_rows(root / value, config_name), value
    elif isinstance(value, list):
        rows, where = _inline_rows(value, config_name), f"{config_name}: TEAMS"
    else:
        raise RosterError(f"{config_name}: TEAMS: must be a list of teams or the path of a CSV file")
    teams: dict[str, list[Member]] = {}
    seen: dict[str, str] = {}
    for n, (team, member) in enumerate(rows, 1):
        for name, text in (("team", team), ("student id", member.id), ("name", member.name)):
            if not text.strip():
                raise RosterError(f"{where}: entry {n}: the {name} is empty")
        if member.id in seen and seen[member.id] != team:
            raise RosterError(f"{where}: student {member.id} ({member.name}) is in two teams, "
                              f"{seen[member.id]} and {team}; a student belongs to one team")
        if member.id in seen:
            raise RosterError(f"{where}: student {member.id} is listed twice in team {team}")
        seen[member.id] = team
        teams.setdefault(team, []).append(member)
    for team, members in teams.items():
        if len(members) > max_team_size:
            raise RosterError(f"{where}: team {team} has {len(members)} members; teams have at most {max_team_size}")
    return Roster({t: Team(t, tuple(ms)) for t, ms in teams.items()})


def _inline_rows(teams: list, config_name: str):
    for i, team in enumerate(teams):
        where = f"{config_name}: TEAMS[{i}]"
        if not isinstance(team, dict) or set(team) != {"id", "members"} or not isinstance(team["members"], list):
            raise RosterError(f"{where}: must be a dict with 'id' and 'members' (a list)")
        for j, m in enumerate(team["members"]):
            if not isinstance(m, dict) or not {"id", "name"} <= set(m) <= {"id", "name", "email"} \
                    or not all(isinstance(v, str) for v in m.values()):
                raise RosterError(f"{where}.members[{j}]: must be a dict of strings with 'id', 'name' "
                                  "and optionally 'email'")
            yield str(team["id"]), Member(m["id"].strip(), m["name"].strip(), m.get("email", "").strip())


def _csv_rows(path: Path, config_name: str):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(f"{config_name}: TEAMS: the roster {path} cannot be read ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    missing = {"team", "student_id", "name"} - set(reader.fieldnames or ())
    if missing:
        raise RosterError(f"{path.name}: missing column(s) {', '.join(sorted(missing))} "
                          "(expected team, student_id, name and optionally email)")
    return [(r["team"].strip(), Member(r["student_id"].strip(), r["name"].strip(), (r.get("email") or "").strip()))
            for r in reader]


@dataclass
class Handin:
    """One graded hand-in with what is known of its authors and its time."""

    path: Path
    team: str | None = None
    members: tuple[str, ...] = ()
    submitted_at: dt.datetime | None = None  # from the LMS, never from the student's own files
    notes: list[str] = field(default_factory=list)


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


def attribute(found: dict[str, Handin], roster: Roster | None) -> tuple[dict[str, Handin], list[tuple[str, str]]]:
    """Submission id -> hand-in, keyed by team id wherever the team is known, and the problems to report.

    Several hand-ins of one team: the latest (by LMS time, else the last by name) counts, the others are
    reported. A hand-in whose team is unknown keeps its own id and is reported: its grade is not
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
        for sid, _ in older:
            problems.append((sid, f"an earlier hand-in of team {key}; the latest ({shown_time(latest)}) is graded"))
            latest.notes.append(f"team {key} handed in {len(entries)} times; the latest counts")
        result[key] = latest
    return result, problems


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
