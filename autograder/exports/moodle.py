"""Moodle in and out: its assignment download as hand-ins, its grading worksheet for times and grades.

"Download all submissions" (checked against Moodle's own code, see the README) names each entry
`<prefix>_assignsubmission_<plugin>`: a folder per prefix and plugin, with a trailing `_` before 4.1
(`Full Name_123_assignsubmission_file_/`) and without it from 4.1 (`.../Full Name_123_assignsubmission_file/`),
or with "Download submissions in folders" off one file each, `<prefix>_assignsubmission_file_<file>`.
The prefix is `<Full Name>_<participant id>`; with "Students submit in groups", from 4.1 one
`<Group name>_<group id>` (or `Default group`) per group, before 4.1 a copy per member,
`<Group name>-<Full Name>_<participant id>`. Moodle turns every `_` of a name into a space, so the
last `_` before the id splits them. Online text comes as `onlinetext.html` of the `onlinetext` plugin.

"Download grading worksheet" is a CSV with one row per participant: `Identifier` ("Participant 123"),
`Full name`, `Email address`, `Status`, `Group` for group submissions,
`Grade`, `Maximum Grade`, `Last modified (submission)`, `Last modified (grade)`, `Feedback comments`.
It is the trusted source of hand-in times and group members; the filled worksheet goes back to
"Upload grading worksheet" with the same columns, identifiers and encoding.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autograder.course.roster import Roster
from autograder.exports.manual import spreadsheet_number, with_manual_scores
from autograder.grading.handins import (MAX_ENTRIES, MAX_NOTEBOOK_BYTES, SubmissionFormatError, read_notebook,
                                        readable_member, shown)
from autograder.grading.teams import Handin, extend

_ENTRY = re.compile(r"^(?P<prefix>.+?)_assignsubmission_(?P<plugin>[a-z]+)(?P<rest>(?:_.*)?)$", re.DOTALL)
_PREFIX = re.compile(r"^(?P<name>.*)_(?P<id>\d+)$", re.DOTALL)
_TIME_FORMATS = ("%A, %d %B %Y, %I:%M %p", "%A, %B %d, %Y, %I:%M %p", "%A, %d %B %Y, %H:%M")
_REQUIRED = ("Identifier", "Full name", "Grade", "Last modified (submission)", "Feedback comments")
EXTENSION = "Extension granted until: "  # mod_assign's `userextensiondate` string, in English
DEFAULT_GROUP = "Default group"  # mod_assign's `defaultteam`: students in no group share its submission
ONLINE_TEXT_BYTES = 1 << 20
MAX_DOWNLOAD_BYTES = 4 * 2**30
_NOT_AN_ENTRY = ("not a Moodle submission entry (<Full Name>_<id>_assignsubmission_file, or <Group>_<id>_... "
                 "for group submissions)")


class MoodleError(Exception):
    """A worksheet or download that cannot be used; the message says which and why."""


@dataclass
class Worksheet:
    header: list[str]
    rows: list[dict[str, str]]
    bom: bool

    def by_participant(self) -> dict[str, dict[str, str]]:
        return {participant_id(r["Identifier"]): r for r in self.rows}

    @property
    def in_groups(self) -> bool:
        """The assignment has "Students submit in groups": Moodle adds the `Group` column."""
        return "Group" in self.header


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
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=timezone)
        except ValueError:
            continue
    raise MoodleError(f"'{text}' is not a time Moodle writes in English (e.g. 'Monday, 27 April 2027, 11:45 PM'); "
                      "download the worksheet with English as your Moodle language")


def extension_until(status: str, timezone) -> dt.datetime | None:
    """The due date of an extension in the worksheet's Status column: gradingtable.php's col_status joins
    its parts with " - " when downloading, the extension last ("Extension granted until: <userdate>")."""
    _, found, rest = status.partition(EXTENSION)
    return submission_time(rest.split(" - ")[0], timezone) if found else None


def moodle_time(moment: dt.datetime) -> str:
    """A time as Moodle writes it in English ('Tuesday, 27 April 2027, 11:45 PM'), which its importer reads."""
    return f"{moment:%A}, {moment.day} {moment:%B %Y}, {int(moment.strftime('%I'))}:{moment:%M %p}"


def opened_download(path: Path, store: Path) -> Path:
    """The download as a folder: itself, or the .zip extracted once into `store/<its SHA-256>/` (regular
    files only, names inside the folder, sizes capped), where every later export and rerun finds it."""
    if path.is_dir():
        return path
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        target = store / digest.hexdigest()[:32]
        if target.is_dir():
            return target
        store.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=store))
    except OSError as exc:
        raise SubmissionFormatError(f"{shown(path)} cannot be unpacked into {shown(store)}: {exc}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            _extract(archive, staging, shown(path.name))
        try:
            os.rename(staging, target)  # whole or not at all
        except OSError:
            if not target.is_dir():  # else a second grader unpacked the same download first
                raise
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionFormatError(f"{shown(path)} is not a readable Moodle download (.zip): {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


@dataclass
class _Entry:
    """One top-level entry of a download: whose (`name`, `id`), which plugin, and for the flat layout
    the uploaded file's name."""

    path: Path
    name: str
    id: str | None
    plugin: str
    file: str | None


def _entry(path: Path) -> _Entry | None:
    match = _ENTRY.match(path.name)
    if not match:
        return None
    rest, folder = match["rest"], path.is_dir() and not path.is_symlink()
    if folder and rest not in ("", "_"):
        return None
    if not folder and len(rest) < 2:
        return None
    prefix = _PREFIX.match(match["prefix"])
    name, id_ = (prefix["name"], prefix["id"]) if prefix else (match["prefix"], None)
    return _Entry(path, name, id_, match["plugin"], None if folder else rest[1:])


def _norm(text: str) -> str:
    """A name as Moodle's file names and worksheet both give it: `_` made a space, case and accents in
    one form."""
    return " ".join(unicodedata.normalize("NFC", text.replace("_", " ")).casefold().split())


def moodle_handins(folder: Path, worksheet: Worksheet | None, roster: Roster | None, timezone, label: str,
                   ) -> tuple[dict[str, Handin], list[tuple[str, str]], list[tuple[str, str]]]:
    """Submission id -> `Handin` for each participant's or group's files, the entries that are not
    hand-ins (named `<label>/<entry>`), and the hand-ins whose owners are doubtful.

    The worksheet gives each hand-in its time and, for group submissions, its members
    (rows whose `Group` is the folder's group); the roster gives the team. Pre-4.1 copies of one group
    hand-in (one per member) are one hand-in."""
    rows = worksheet.by_participant() if worksheet else {}
    groups = {_norm(r["Group"]): r["Group"] for r in worksheet.rows if r.get("Group")} if worksheet else {}
    owned: dict[tuple[str, str], list[_Entry]] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        entry = _entry(path)
        if entry is None:
            skipped.append((shown(f"{label}/{path.name}"), _NOT_AN_ENTRY))
            continue
        owner = _owner(entry, rows, groups, worksheet)
        if isinstance(owner, str):
            skipped.append((shown(f"{label}/{path.name}"), owner))
        else:
            owned.setdefault(owner, []).append(entry)
    found: dict[str, Handin] = {}
    problems: list[tuple[str, str]] = []
    for (kind, who), entries in owned.items():
        files = [e for e in entries if e.plugin == "file"]
        texts = [e for e in entries if e.plugin == "onlinetext"]
        skipped += [(shown(f"{label}/{e.path.name}"), f"a submission of Moodle's `{e.plugin}` plugin, which the "
                                                      "grader does not read") for e in entries
                    if e.plugin not in ("file", "onlinetext")]
        if not files:
            skipped += [(shown(f"{label}/{e.path.name}"), "online text without a file submission: nothing to grade "
                                                          "(kept out of the grades)") for e in texts]
            continue
        sid = f"{files[0].name}_{who}" if kind == "participant" else who
        handin = _handin(kind, who, files, rows, worksheet, roster, timezone, problems, sid)
        text = _online_text(texts)
        if text:
            handin.notes.append(f"online text (kept, not graded): {text}")
        found[shown(sid)] = handin
    return found, skipped, problems


def _owner(entry: _Entry, rows: dict, groups: dict, worksheet: Worksheet | None) -> tuple[str, str] | str:
    """("participant", id), ("group", name as the worksheet writes it) or, without a worksheet,
    ("person", name): whose entry this is; or why it is nobody's."""
    if worksheet is None:
        return ("person", f"{entry.name}_{entry.id}" if entry.id else entry.name)
    row = rows.get(entry.id) if entry.id else None
    if worksheet.in_groups:
        if row is not None and _norm(entry.name) == _norm(f"{row.get('Group', '')}-{row['Full name']}"):
            return ("group", row["Group"])  # before 4.1: the group's hand-in, copied for this member
        if _norm(entry.name) in groups:
            return ("group", groups[_norm(entry.name)])
    if row is not None:
        return ("participant", entry.id)
    if entry.id is None or worksheet.in_groups:
        return (f"no group `{entry.name}` in the grading worksheet's Group column: download the worksheet of the "
                "same assignment")
    return f"participant {entry.id} is not in the grading worksheet"


def _handin(kind: str, who: str, files: list[_Entry], rows: dict, worksheet: Worksheet | None,
            roster: Roster | None, timezone, problems: list, sid: str) -> Handin:
    folders = [e for e in files if e.file is None]
    flat = [e for e in files if e.file is not None]
    # Before 4.1 a group's hand-in comes once per member; they are the same files.
    path = folders[0].path if folders else flat[0].path
    choices = {e.file: e.path for e in flat} if not folders and len(flat) > 1 else None
    if kind == "person":
        team, members = _person_or_team(roster, who)
        return Handin(path, team=team, members=members, choices=choices)
    member_rows = [rows[who]] if kind == "participant" else [
        r for r in worksheet.rows if _norm(r.get("Group", "")) == _norm(who)]
    members, teams = [], set()
    for row in member_rows:
        member, team = roster.team_of_person(name=row["Full name"], email=row.get("Email address", "")) \
            if roster else (None, None)
        members.append(member.id if member else f"Participant {participant_id(row['Identifier'])}")
        if team:
            teams.add(team.id)
    times = [t for t in (submission_time(r["Last modified (submission)"], timezone) for r in member_rows) if t]
    if kind == "group" and roster and not teams and who in roster.teams:
        teams.add(who)
    if len(teams) > 1:
        problems.append((sid, f"Moodle group {who} holds students of teams {', '.join(sorted(teams))}: graded as "
                              f"{sid}, given to no student until the roster and the Moodle groups agree"))
    handin = Handin(path, team=next(iter(teams)) if len(teams) == 1 else None, members=tuple(members),
                    submitted_at=max(times) if times else None, choices=choices)
    # Moodle grants extensions per student; a group's hand-in gets the latest any member has.
    for due in filter(None, (extension_until(r.get("Status", ""), timezone) for r in member_rows)):
        extend(handin, due, "Moodle")
    return handin


def _person_or_team(roster: Roster | None, name: str) -> tuple[str | None, tuple[str, ...]]:
    """Without a worksheet: the prefix as a student's name, else a team's id (a group named like
    the team), else `<Group>-<Full Name>` (before 4.1) read either way."""
    if roster is None:
        return None, (name,)
    base = _PREFIX.match(name)
    candidates = [base["name"] if base else name]
    parts = candidates[0].split("-")
    candidates += ["-".join(parts[i:]) for i in range(1, len(parts))] + ["-".join(parts[:i]) for i in
                                                                          range(len(parts) - 1, 0, -1)]
    for text in candidates:
        member, team = roster.team_of_person(name=text)
        if team:
            return team.id, (member.id,)
        if text in roster.teams:
            return text, ()
    return None, (name,)


def _online_text(entries: list[_Entry]) -> str:
    """The plain text of Moodle's `onlinetext.html` (a folder's, or the flat file), at most 1 MB read."""
    from bs4 import BeautifulSoup

    texts = []
    for e in entries:
        page = e.path if e.file is not None else e.path / "onlinetext.html"
        try:
            html = read_notebook(page, ONLINE_TEXT_BYTES).decode("utf-8", "replace")
        except SubmissionFormatError:
            continue
        soup = BeautifulSoup(html, "html.parser")
        for block in soup.find_all(["p", "br", "div", "li", "tr", "h1", "h2", "h3"]):
            block.insert_after("\n")  # words of two paragraphs stay apart, words of one stay together
        texts.append(" ".join(soup.get_text().split()))
    return " ".join(t for t in texts if t)


def fill_worksheet(worksheet: Worksheet, grades: dict[str, tuple[float, float, str]], out: Path,
                   now: dt.datetime) -> int:
    """Write the worksheet with `Grade`, `Feedback comments` and `Last modified (grade)` filled per
    participant id (`grades[pid] = (grade, possible, comment)`, scaled to the row's `Maximum Grade`);
    rows without a grade keep theirs. `Last modified (grade)` becomes `now`: Moodle's importer skips a
    row whose grade changed in Moodle after that time, so a copied older time (or "-") would make it
    skip every row graded by an earlier upload. Returns the number of rows filled."""
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
            if "Last modified (grade)" in row:
                row["Last modified (grade)"] = moodle_time(now)
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
    return any(_ENTRY.match(n) for n in names)


def comment_for(sub, assignment, regrades=()) -> str:
    """The feedback comment Moodle shows the student: points per question, the outcome of each regrade request
    and the grade, plain text."""
    from autograder.exports.grades import check_title, grade_of, grade_status

    total, possible, penalty, final = grade_of(sub, assignment)
    lines = [f"{question}: {earned:g} of {out_of:g} points" for question, (earned, out_of) in
             sub.per_question().items()]
    grade = f"Total: {final:g} of {possible:g} points"
    if penalty:
        grade += f" ({total:g} before the late penalty of {penalty:g}%)"
    status = grade_status(sub)
    if status != "graded":
        grade += f"; {status}" + (f": {sub.message}" if sub.status == "error" else "")
    lines += [f"Regrade request on {check_title(r.test_id)}: {r.outcome or 'pending'}" for r in regrades]
    return "\n".join([*lines, grade + "."])


def export_moodle(gradebook, assignment, roster: Roster | None, worksheet_path: Path, out: Path,
                  now: dt.datetime | None = None) -> tuple[int, int]:
    """Fill the grading worksheet: each participant gets their team's final grade (late penalty
    included) and the points per question. Returns (rows filled, rows of participants without a hand-in)."""
    from autograder.exports.grades import grade_of

    worksheet = read_worksheet(worksheet_path)
    subs = {s.submission_id: s for s in with_manual_scores(gradebook, assignment)}
    records = gradebook.handins(assignment.id)
    regrades = gradebook.regrades(assignment.id)
    by_participant = {m: sid for sid, r in records.items() for m in r.members if m.startswith("Participant ")}
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
        _, possible, _, final = grade_of(sub, assignment)
        grades[pid] = (final, possible, comment_for(sub, assignment,
                                                    [r for r in regrades if r.submission_id == sid]))
    return fill_worksheet(worksheet, grades, out, now or dt.datetime.now(dt.timezone.utc).astimezone(
        assignment.due.tzinfo)), missing
