"""Teams and their members: the roster, one grade per student.

The course works in teams; `course_config.py` declares them in `TEAMS`, inline or as a CSV file
(columns `team`, `student_id`, `name`, optionally `email`). Matching hand-ins to these teams is
grading's intake (`autograder.grading.teams`).
"""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass
from pathlib import Path


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
