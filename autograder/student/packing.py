"""A team's hand-in archive: the notebook plus who handed it in, written by `autograder pack`.

The archive holds the notebook under its own name and `handin.json`: assignment, team id, member ids,
when it was packed, the notebook's SHA-256 and the result of `autograder validate` run just before.
The grader reads the team from it (`autograder.grading.teams.attribute`); it never trusts its time, which
comes from the LMS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from pathlib import Path

from autograder.grading.handins import MANIFEST, SubmissionFormatError, read_notebook
from autograder.course.roster import Roster

FORMAT = "autograder-handin/1"


class PackError(Exception):
    """The hand-in cannot be packed as asked; the message says what to change."""


def _check_team_id(team: str) -> None:
    if not team.strip() or any(c in team for c in "/\\\0"):
        raise PackError(f"{team!r} is not a team id")


def members_for(team: str, members: list[str], roster: Roster | None) -> list[str]:
    """The member ids to record: as given, checked against the roster where the course has one. Checked
    before anything is validated or written, so a wrong team is said at once."""
    _check_team_id(team)
    if roster is None:
        if not members:
            raise PackError("name your team's student ids with --members ID,ID,ID "
                            "(the course roster is not available here)")
        return members
    if team not in roster.teams:
        raise PackError(f"team {team} is not on the course roster; teams: {', '.join(sorted(roster.teams))}")
    listed = [m.id for m in roster.teams[team].members]
    strangers = [m for m in members if m not in listed]
    if strangers:
        raise PackError(f"{', '.join(strangers)} not in team {team} on the course roster "
                        f"(members: {', '.join(listed)})")
    return members or listed


def pack(notebook: Path, team: str, members: list[str], output: Path | None = None,
         validation: dict | None = None) -> Path:
    """Write `<team>_<notebook stem>.zip` next to the notebook (or at `output`) and return its path."""
    _check_team_id(team)  # it names the archive
    try:
        data = read_notebook(notebook)
    except SubmissionFormatError as exc:
        raise PackError(str(exc)) from None
    manifest = {
        "format": FORMAT,
        "assignment": notebook.stem,
        "team": team,
        "members": members,
        "packed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "notebook": notebook.name,
        "notebook_sha256": hashlib.sha256(data).hexdigest(),
        "validation": validation,
    }
    output = output or notebook.with_name(f"{team}_{notebook.stem}.zip")
    partial = output.with_name(output.name + ".part")  # a crash never leaves a half archive under the real name
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(notebook.name, data)
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PackError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output
