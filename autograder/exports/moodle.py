"""Moodle in and out: its assignment download as hand-ins, its grading worksheet for times and grades.

Moodle's "Download all submissions" holds one folder per participant,
`<Full Name>_<participant id>_assignsubmission_file_/` with the files they uploaded (or, without
folders, files named `<Full Name>_<participant id>_assignsubmission_file_<file>`), as a .zip or
extracted. Its "Download grading worksheet" is a CSV with one row per participant: `Identifier`
("Participant 123"), `Full name`, `Email address`, `Status`, `Grade`, `Maximum Grade`,
`Last modified (submission)`, `Feedback comments` and more. The worksheet is the trusted source of
hand-in times (the late policy); the filled worksheet goes back to Moodle's "Upload grading
worksheet" with the same columns, identifiers and encoding.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autograder.grading.handins import MAX_ENTRIES, MAX_NOTEBOOK_BYTES, SubmissionFormatError, readable_member, shown
from autograder.exports.manual import spreadsheet_number, with_manual_scores
from autograder.course.roster import Roster
from autograder.grading.teams import Handin

_FOLDER = re.compile(r"^(?P<name>.+)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.*)$")
_TIME_FORMATS = ("%A, %d %B %Y, %I:%M %p", "%A, %B %d, %Y, %I:%M %p", "%A, %d %B %Y, %H:%M")
_REQUIRED = ("Identifier", "Full name", "Grade", "Last modified (submission)", "Feedback comments")
MAX_DOWNLOAD_BYTES = 4 * 2**30


class MoodleError(Exception):
    """A worksheet or download that cannot be used; the message says which and why."""


@dataclass
class Worksheet:
    header: list[str]
    rows: list[dict[str, str]]
    bom: bool

    def by_participant(self) -> dict[str, dict[str, str]]:
        return {participant_id(r["Identifier"]): r for r in self.rows}


def participant_id(identifier: str) -> str:
    """"Participant 123" -> "123" (the number in the download's folder names)."""
    return identifier.strip().rpartition(" ")[2]


def read_worksheet(path: Path) -> Worksheet:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MoodleError(f"{path}: the grading worksheet cannot be read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = list(reader.fieldnames or ())
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise MoodleError(f"{path}: not a Moodle grading worksheet: missing column(s) {', '.join(missing)} "
                          "(download it from the assignment: View all submissions > Download grading worksheet)")
    return Worksheet(header, list(reader), raw.startswith(b"\xef\xbb\xbf"))


def submission_time(text: str, timezone) -> dt.datetime | None:
    """Moodle writes times in the teacher's language and zone ("Monday, 27 April 2027, 11:45 PM");
    "-" means no submission. Read in the course's time zone."""
    text = " ".join(text.split())
    if not text or text == "-":
        return None
    for fmt in _TIME_FORMATS:
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(text, fmt).replace(tzinfo=timezone)
    raise MoodleError(f"'{text}' is not a time Moodle writes in English (e.g. 'Monday, 27 April 2027, 11:45 PM'); "
                      "download the worksheet with English as your Moodle language")


@contextlib.contextmanager
def opened_download(path: Path):
    """The download as a folder: itself, or the .zip extracted into a private temporary folder
    (regular files only, names inside the folder, sizes capped)."""
    if path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="autograder-moodle-") as folder:
        try:
            with zipfile.ZipFile(path) as archive:
                _extract(archive, Path(folder), shown(path.name))
        except (zipfile.BadZipFile, OSError) as exc:
            raise SubmissionFormatError(f"{shown(path)} is not a readable Moodle download (.zip): {exc}") from None
        yield Path(folder)


def _extract(archive: zipfile.ZipFile, target: Path, name: str) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES * 10:
        raise SubmissionFormatError(f"{name} holds {len(infos)} files; that is no assignment download")
    total = 0
    for info in infos:
        parts = [p for p in info.filename.split("/") if p]
        if not readable_member(info) or not parts or ".." in parts or info.filename.startswith("/"):
            continue  # links, devices, hidden files and names that would leave the folder are never written
        total += info.file_size
        if info.file_size > MAX_NOTEBOOK_BYTES or total > MAX_DOWNLOAD_BYTES:
            continue  # left out; a hand-in without its file says so when graded
        destination = target.joinpath(*parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, destination.open("wb") as out:
            shutil.copyfileobj(source, out)


def moodle_handins(folder: Path, worksheet: Worksheet | None, roster: Roster | None, timezone, label: str,
                   ) -> tuple[dict[str, Handin], list[tuple[str, str]]]:
    """Submission id -> `Handin` for each participant's files (team from the roster by e-mail or name,
    time from the worksheet), and the entries that are not hand-ins, named `<label>/<entry>`."""
    rows = worksheet.by_participant() if worksheet else {}
    grouped: dict[str, list[Path]] = {}
    names: dict[str, str] = {}
    skipped = []
    for entry in sorted(folder.iterdir()):
        match = _FOLDER.match(entry.name)
        if not match or match["plugin"] != "file":
            skipped.append((shown(f"{label}/{entry.name}"),
                            "not a Moodle file submission (<Full Name>_<id>_assignsubmission_file_)"))
            continue
        grouped.setdefault(match["pid"], []).append(entry)
        names[match["pid"]] = match["name"]
    found: dict[str, Handin] = {}
    for pid, entries in grouped.items():
        if len(entries) > 1:  # "download in folders" was off and they uploaded several files
            skipped += [(shown(f"{label}/{e.name}"),
                         f"participant {pid} uploaded {len(entries)} files; download the submissions with "
                         "\"Download submissions in folders\" to grade them") for e in entries]
            continue
        path = entries[0]
        row = rows.get(pid)
        if worksheet and row is None:
            skipped.append((shown(f"{label}/{path.name}"), f"participant {pid} is not in the grading worksheet"))
            continue
        member, team = roster.team_of_person(name=row["Full name"] if row else names[pid],
                                             email=(row or {}).get("Email address", "")) if roster else (None, None)
        handin = Handin(path, team=team.id if team else None,
                        members=(member.id,) if member else (f"Participant {pid}",),
                        submitted_at=submission_time(row["Last modified (submission)"], timezone) if row else None)
        found[f"{names[pid]}_{pid}"] = handin
    return found, skipped


def fill_worksheet(worksheet: Worksheet, grades: dict[str, tuple[float, float, str]], out: Path) -> int:
    """Write the worksheet with `Grade` and `Feedback comments` filled per participant id
    (`grades[pid] = (grade, possible, comment)`, scaled to the row's `Maximum Grade`); rows without a
    grade keep theirs. Returns the number of rows filled."""
    filled = 0
    rows = []
    for row in worksheet.rows:
        row = dict(row)
        graded = grades.get(participant_id(row["Identifier"]))
        if graded is not None and row.get("Grade can be changed", "Yes") != "No":
            grade, possible, comment = graded
            maximum = spreadsheet_number(row.get("Maximum Grade", "")) or possible
            row["Grade"] = f"{grade / possible * maximum:.2f}" if possible else "0.00"
            row["Feedback comments"] = comment
            filled += 1
        rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8-sig" if worksheet.bom else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=worksheet.header, quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)
    return filled


def is_download(path: Path) -> bool:
    """A Moodle assignment download (folder or .zip) rather than a batch of our own or one hand-in."""
    try:
        if path.is_dir():
            names = [e.name for e in path.iterdir()]
        elif path.is_file() and path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                names = [i.filename.split("/")[0] for i in archive.infolist()]
        else:
            return False
    except (OSError, zipfile.BadZipFile):
        return False
    return any(_FOLDER.match(n) for n in names)


def export_moodle(gradebook, assignment, roster: Roster | None, worksheet_path: Path, out: Path) -> tuple[int, int]:
    """Fill the grading worksheet: each participant gets their team's final grade (late penalty
    included) and a short comment. Returns (rows filled, rows of participants without a hand-in)."""
    from autograder.exports.grades import grade_status, file_names, grade_of

    worksheet = read_worksheet(worksheet_path)
    subs = {s.submission_id: s for s in with_manual_scores(gradebook, assignment)}
    records = gradebook.handins(assignment.id)
    by_participant = {m: sid for sid, r in records.items() for m in r.members if m.startswith("Participant ")}
    pages = file_names(subs)
    grades, missing = {}, 0
    for row in worksheet.rows:
        pid = participant_id(row["Identifier"])
        sid = by_participant.get(f"Participant {pid}")
        if roster:
            _, team = roster.team_of_person(name=row["Full name"], email=row.get("Email address", ""))
            sid = team.id if team else sid
        sub = subs.get(sid) if sid else None
        if sub is None:
            missing += 1
            continue
        total, possible, penalty, final = grade_of(sub, assignment)
        comment = f"{final:g} of {possible:g} points"
        if penalty:
            comment += f" ({total:g} before the late penalty of {penalty:g}%)"
        status = grade_status(sub)
        if status != "graded":
            comment += f"; {status}" + (f": {sub.message}" if sub.status == "error" else "")
        comment += f". Every check and its message: {pages[sub.submission_id]}.html"
        grades[pid] = (final, possible, comment)
    return fill_worksheet(worksheet, grades, out), missing
