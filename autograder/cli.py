"""The `autograder` command: one subcommand per stage, each a function `(course, args) -> exit status`.

Exit status: 0 done, 1 a check (`release --check`, `validate`) found problems, 2 the course config, a source or
a notebook is broken. Errors the user can fix are one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from autograder.course.config import ConfigError, Course, load_course
from autograder.exports.grades import ExportError
from autograder.course.gradebook import DEFAULT_PATH, Gradebook, GradebookError, safe_text
from autograder.grading.handins import SubmissionFormatError
from autograder.exports.manual import ManualError, with_manual_scores
from autograder.exports.moodle import MoodleError
from autograder.student.packing import PackError


def cmd_release(course: Course, args: argparse.Namespace) -> int:
    """Compile source/<a>/ into release/<a>/, or with --check report drift and leaks without writing."""
    from autograder.authoring.release import ReleaseError  # nbgrader: imported only by the commands that use it

    try:
        return _release(course, args)
    except ReleaseError as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2


def _release(course: Course, args: argparse.Namespace) -> int:
    from autograder.authoring.release import check_release, release_assignment

    status = 0
    reported: set[str] = set()  # a leak from one assignment's release into another's concerns both: say it once
    for assignment in course.select(args.assignments):
        shown = f"release/{assignment.id}/"
        if not args.check:
            written = release_assignment(
                assignment, before_write=None if args.no_verify else lambda a, staging: _verified(a, staging, args.jobs))
            print(f"{shown}: {len(written)} files written" + ("" if args.no_verify else
                  " (verified: the solution scores full marks, the release zero)"))
            continue
        problems = check_release(assignment)
        for problem in problems:
            if problem not in reported:
                print(problem, file=sys.stderr)
            reported.add(problem)
        if problems:
            status = 1
            print(f"{shown} FAILED: {len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
        else:
            print(f"{shown} is up to date")
    return status


def _verified(assignment, staging: Path, jobs: int | None) -> None:
    """A release is written only when its solution scores full marks and its stubs score zero."""
    from autograder.authoring.release import ReleaseError
    from autograder.authoring.verify import verify

    print(f"release/{assignment.id}/: verifying (grading the solution and the unsolved release)", flush=True)
    problems = verify(assignment, release_dir=staging, jobs=jobs)
    if problems:
        raise ReleaseError("not released, `verify` failed:\n  " + "\n  ".join(problems))


def cmd_new(course: Course, args: argparse.Namespace) -> int:
    """Create an assignment around one example task, with its release, so `verify ID` passes at once."""
    from autograder.authoring.scaffold import ScaffoldError, new_assignment

    try:
        written = new_assignment(course, args.assignment, args.title, args.due)
    except ScaffoldError as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(course.root).as_posix()}")
    print(f"next: replace the example task in source/{args.assignment}/, grader_tests/{args.assignment}/ and "
          f"samples/{args.assignment}/ (docs/authoring.md), then `autograder release {args.assignment}` and "
          f"`autograder verify --samples {args.assignment}`")
    return 0


def cmd_verify(course: Course, args: argparse.Namespace) -> int:
    """Grade the solution (must score full marks) and the release (must score zero) of each assignment."""
    from autograder.authoring.verify import verify

    status = 0
    for assignment in course.select(args.assignments):
        problems = verify(assignment, jobs=args.jobs, samples=args.samples)
        if args.mutants and not problems:
            problems = _mutation_problems(assignment, args)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{assignment.id}: {'FAILED' if problems else 'verified'}")
        status = status or (1 if problems else 0)
    return status


def cmd_mutants(course: Course, args: argparse.Namespace) -> int:
    """Grade mutants of each solution with its hidden suite; print the score and every survivor."""
    from autograder.authoring.mutants import format_report, run, write_html

    status = 0
    for assignment in course.select(args.assignments):
        report = run(assignment, limit=args.max, jobs=args.jobs)
        print(format_report(report))
        if args.html:
            print(f"wrote {write_html(report, assignment, args.html)}")
        status = status or (1 if report.solution_problem else 0)
    return status


def _mutation_problems(assignment, args: argparse.Namespace) -> list[str]:
    """`verify --mutants`: the suite must kill at least the assignment's `mutation_threshold` of the mutants."""
    from autograder.authoring.mutants import run

    threshold = assignment.mutation_threshold
    if threshold is None:  # mutants cost a sandbox run each: only where someone asked for a bar
        print(f"{assignment.id}: no mutation_threshold in course_config.py, mutants not graded")
        return []
    report = run(assignment, limit=args.max, jobs=args.jobs)
    print(report.line())
    if report.solution_problem:
        return [f"{assignment.id}: mutants: {report.solution_problem}"]
    if report.score < threshold:
        survivors = ", ".join(f"{v.mutant.id} ({v.mutant.function}: {v.mutant.kind})"
                              for v in report.verdicts if v.status == "survived")
        return [f"{assignment.id}: mutation score {report.score:.0%} is below its threshold {threshold:.0%} "
                f"(`autograder mutants {assignment.id}` shows each survivor's diff); survivors: {survivors or 'none'}"]
    return []


def cmd_grade(course: Course, args: argparse.Namespace) -> int:
    """Grade submissions into the gradebook and print a score table."""
    from rich.console import Console

    from autograder.grading.devices import nvidia_driver_present
    from autograder.grading.scheduler import Cluster, complete_gpu_tests, grade_batch

    assignment = course.get(args.assignment)
    if args.pending_gpu and not nvidia_driver_present():
        print("autograder: error: --pending-gpu runs the GPU-marked tests, and this machine has no NVIDIA driver: "
              "run it on a GPU runner with the same gradebook", file=sys.stderr)
        return 2
    if args.chunk_size < 1:
        print(f"autograder: error: --chunk-size must be at least 1, not {args.chunk_size}", file=sys.stderr)
        return 2
    if args.profile and not (args.profile.parent.is_dir() and os.access(args.profile.parent, os.W_OK)):
        # said before the batch, not after it: the profile of a long batch would be lost
        print(f"autograder: error: --profile {args.profile}: cannot write a file in {args.profile.parent}",
              file=sys.stderr)
        return 2
    if not args.no_isolation and args.executor != "slurm":  # a Slurm node's kernel is not this one's
        from autograder.grading.isolation import refusal

        if why := refusal():
            print(f"autograder: error: the sandbox cannot build its walls on this machine, so no submission is "
                  f"graded: {why}. Or grade without them (each submission still runs in a process of its own) "
                  "with --no-isolation", file=sys.stderr)
            return 2
    cluster = None if args.executor == "pool" else Cluster(
        "local" if args.executor == "submitit-local" else "slurm", args.cluster_folder, args.slurm_partition,
        args.chunk_size)
    handins, not_handins, handin_problems = _handins_to_grade(course, assignment, args)
    submissions = {sid: h.path for sid, h in handins.items()}
    console = Console(stderr=True)
    if not submissions:
        _print_found(not_handins, handin_problems)
        print(f"autograder: error: nothing to grade in {', '.join(map(str, args.paths))}: "
              f"{len(not_handins)} entries are no hand-ins, {len(handin_problems)} hand-ins wait for a decision "
              "(listed above)", file=sys.stderr)
        return 2
    with Gradebook.open(args.gradebook) as gradebook:
        _record_handins(gradebook, course, assignment, handins)  # kept should the batch be cut short
        with _BatchProgress(assignment.id, console, live=sys.stdout.isatty(),
                            profile=args.profile is not None) as progress:
            try:
                if args.pending_gpu:
                    graded, skipped, failures = complete_gpu_tests(
                        assignment, submissions, gradebook, jobs=args.jobs, isolate=not args.no_isolation,
                        on_start=progress.start, on_done=progress.done)
                    console.print(f"GPU tests run for {len(graded)} submissions; {len(skipped)} had none pending "
                                  "(or changed since their CPU grade: grade those without --pending-gpu)")
                    skipped = []
                else:
                    graded, skipped, failures = grade_batch(
                        assignment, submissions, gradebook, jobs=args.jobs, force=args.force,
                        isolate=not args.no_isolation, on_start=progress.start, on_done=progress.done,
                        cluster=cluster)
            except KeyboardInterrupt:
                progress.stop()
                console.print(f"interrupted: {progress.recorded} submissions were graded and recorded in "
                              f"{args.gradebook}; run the same command again to grade the rest", soft_wrap=True)
                return 130
        results = {r.submission_id: r for r in with_manual_scores(gradebook, assignment)
                   if r.submission_id in submissions}
    if args.profile:
        try:
            _write_profile(args.profile, assignment.id, args, progress.stages)
        except OSError as exc:
            print(f"autograder: error: the grades are recorded, but the profile could not be written: {exc}",
                  file=sys.stderr)
            return 2
    _print_scores(assignment, results, set(skipped), not_handins, handin_problems)
    for sid, failure in failures.items():
        console.print(_plain(f"grader failure on {sid} (not recorded, rerun to retry): {failure}", style="red"))
    return 3 if failures else 0


class _BatchProgress:
    """Done/total, rate, time left and the failures so far of a `grade` batch: a rich bar on a terminal,
    one plain line per finished submission otherwise (a log file, CI), both from `summary`.

    Students' failing submissions (a check failed or timed out, or the notebook could not be read) are
    counted apart from grader failures (not recorded, or a test that hit a grader error): only the
    second need the course staff."""

    def __init__(self, label: str, console, live: bool, profile: bool = False):
        from rich.progress import BarColumn, Progress, TextColumn

        self.label, self.total, self.finished, self.recorded, self.failing, self.grader_failures = label, 0, 0, 0, 0, 0
        self.stages: dict[str, dict] | None = {} if profile else None  # submission id -> seconds per stage
        self.began = time.monotonic()
        self._bar = Progress(TextColumn("grading {task.description}"), BarColumn(),
                             TextColumn("{task.fields[summary]}"),
                             console=console, transient=True, disable=not live)

    def __enter__(self) -> _BatchProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._bar.__exit__(*exc_info)

    def stop(self) -> None:
        self._bar.stop()

    def start(self, total: int) -> None:
        self.total, self.began = total, time.monotonic()
        self._task = self._bar.add_task(self.label, total=total, summary=self.summary())

    def done(self, job, outcome) -> None:
        self.finished += 1
        if isinstance(outcome, BaseException) or any(t.status == "error" for t in outcome.results):
            self.grader_failures += 1
        elif outcome.status == "error" or any(t.status in ("failed", "timeout") for t in outcome.results):
            self.failing += 1
        if not isinstance(outcome, BaseException):
            self.recorded += 1
            if self.stages is not None:
                self.stages[job.submission_id] = {"stages": dict(outcome.stages),
                                                  "span": getattr(outcome.stages, "span", None)}
        self._bar.update(self._task, advance=1, summary=self.summary())
        if self._bar.disable:
            score = ("grader failure" if isinstance(outcome, BaseException)
                     else f"{outcome.earned:g}/{outcome.possible:g}")
            print(_plain(f"{job.submission_id}: {score} | {self.summary()}").plain, flush=True)

    def summary(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.began
        rate = self.finished / elapsed * 60 if self.finished and elapsed > 0 else None
        left = "--" if rate is None else _minutes((self.total - self.finished) / rate * 60)
        return (f"{self.finished}/{self.total} graded, {'--' if rate is None else f'{rate:.1f}'}/min, {left} left, "
                f"{self.failing} failing, {self.grader_failures} grader failures")


def _write_profile(path: Path, assignment_id: str, args: argparse.Namespace, stages: dict[str, dict]) -> None:
    """`grade --profile`: the stages of each submission (with when its grading began and ended) and of
    the command, as `bench/stages.py` reads them."""
    import json

    from autograder.grading.timings import per_submission, process_age_s, summary

    profile = {"assignment": assignment_id, "jobs": args.jobs, "executor": args.executor,
               "cli_start_s": args.cli_start_s, "command_s": process_age_s(), "submissions": stages}
    path.write_text(json.dumps(profile, indent=1))
    means = summary([entry["stages"] for entry in stages.values()])
    each = per_submission(means)
    slowest = sorted(each.items(), key=lambda item: -item[1])[:4]
    print(f"profile written to {path}: the forkserver's start {means['forkserver start']:.1f} s once; per submission "
          f"{sum(each.values()):.2f} s, most in " + ", ".join(f"{k} {v:.2f} s" for k, v in slowest), file=sys.stderr)


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain(text: str, style: str = ""):
    """Text from a hand-in (ids, messages) as the terminal shows it: never markup or emoji codes for
    rich, never a control sequence for the terminal, always valid Unicode."""
    from rich.text import Text

    return Text(_CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", safe_text(text)), style=style)


def _handins_to_grade(course: Course, assignment, args: argparse.Namespace):
    """Submission id -> `Handin` (keyed by team where known, pointing at the notebook to grade), the
    entries that are no hand-ins, and the hand-ins whose team is unknown, doubtful or superseded, or
    whose notebook the TA must name."""
    from autograder.grading.handins import discover
    from autograder.exports.moodle import is_download
    import zoneinfo

    from autograder.grading.teams import (apply_extensions, attribute, choose_notebooks, read_extensions, read_handins,
                                          read_picks, remember_picks)

    notebook = f"{assignment.id}.ipynb"
    downloads = [p for p in args.paths if is_download(p)]
    if downloads:
        handins, not_handins, problems = _moodle_handins(course, args, downloads, notebook)
    elif args.moodle_worksheet:
        raise SubmissionFormatError(f"--moodle-worksheet is for a Moodle download, and "
                                    f"{', '.join(map(str, args.paths))} holds no "
                                    "<Full Name>_<id>_assignsubmission_file entries")
    else:
        found, not_handins = discover(args.paths)
        read, disagreements = read_handins(found, notebook, course.roster)
        handins, attribution = attribute(read, course.roster, notebook)
        problems = disagreements + attribution
    if args.extensions:
        problems += apply_extensions(handins, read_extensions(args.extensions, zoneinfo.ZoneInfo(course.timezone)))
    given = _picks(args.pick)
    problems += choose_notebooks(handins, notebook, {**read_picks(course.root, assignment.id), **given})
    remember_picks(course.root, assignment.id, {sid: name for sid, name in given.items() if sid in handins})
    return handins, not_handins, problems


def _picks(pairs: list[str]) -> dict[str, str]:
    """`--pick TEAM=FILE` as submission id -> file."""
    picks = {}
    for pair in pairs:
        sid, sep, name = pair.partition("=")
        if not sep or not sid or not name:
            raise SubmissionFormatError(f"--pick {pair!r}: write it as TEAM=FILE, the submission id and the file "
                                        "inside its hand-in, as `hand-ins to check` lists them")
        picks[sid] = name
    return picks


def _moodle_handins(course: Course, args: argparse.Namespace, downloads: list[Path], notebook: str):
    import zoneinfo

    from autograder.exports.moodle import moodle_handins, opened_download, read_worksheet
    from autograder.grading.teams import add_manifests, attribute

    if len(args.paths) > 1:
        raise SubmissionFormatError(f"{downloads[0]} is a Moodle download: grade it on its own")
    worksheet = read_worksheet(args.moodle_worksheet) if args.moodle_worksheet else None
    folder = opened_download(downloads[0], args.gradebook.resolve().parent / "downloads")
    found, not_handins, owners = moodle_handins(folder, worksheet, course.roster, zoneinfo.ZoneInfo(course.timezone),
                                                str(downloads[0]))
    problems = add_manifests(found, notebook)
    handins, attribution = attribute(found, course.roster, notebook)
    if worksheet is None:
        problems.append(("(all)", "no --moodle-worksheet given: hand-in times and Moodle groups are unknown, the "
                                  "late policy is not applied"))
    return handins, not_handins, owners + problems + attribution


def _record_handins(gradebook: Gradebook, course: Course, assignment, handins: dict) -> None:
    """Who and when, per graded submission: the roster's members of its team (else those it names)."""
    from autograder.course.gradebook import HandinRecord

    for sid, h in handins.items():
        team = course.roster.teams.get(h.team) if course.roster and h.team else None
        members = tuple(m.id for m in team.members) if team else h.members
        gradebook.record_handin(assignment.id, HandinRecord(sid, h.team, members, h.submitted_at, "\n".join(h.notes),
                                                            h.due))


def _print_scores(assignment, results: dict, skipped: set, not_handins: list[tuple[str, str]],
                  handin_problems: list[tuple[str, str]] = ()) -> None:
    """The batch's table: per submission the file graded, raw points, late penalty, final grade and what
    is still pending (GPU checks, reflections), as every export counts them."""
    from rich.console import Console
    from rich.table import Table

    from autograder.exports.grades import grade_of, grade_status
    from autograder.grading.handins import graded_name
    from autograder.grading.review import REVIEW

    table = Table(title=f"{assignment.id}: {len(results)} submissions")
    problems, reads = [], []
    for column in ("submission", "file", "points", "late", "final", "passed", "failed", "timeout", "notes"):
        table.add_column(column, justify="left" if column in ("submission", "file", "notes") else "right",
                         overflow="fold" if column == "notes" else "ellipsis")  # every note is read in full
    for sid in sorted(results):
        r = results[sid]
        counts = {s: sum(t.status == s for t in r.results) for s in ("passed", "failed", "timeout", "error")}
        total, possible, penalty, final = grade_of(r, assignment)
        notes = []
        if r.status == "error":
            notes.append("not graded")
            problems.append(f"{sid}: not graded: {r.message}")
        status = grade_status(r)
        if status.startswith("incomplete"):
            notes.append(status)
        if counts["error"]:
            notes.append(f"{counts['error']} grader errors")
        lines = r.load_messages.splitlines()
        to_read = [line.removeprefix(REVIEW) for line in lines if line.startswith(REVIEW)]
        if to_read:
            notes.append(f"read by hand ({len(to_read)})")
            reads.append((sid, to_read))
        if len(lines) > len(to_read):
            notes.append(f"{len(lines) - len(to_read)} load warnings")
        if r.due:
            notes.append(f"due {r.due.astimezone(assignment.due.tzinfo):%Y-%m-%d %H:%M} (extension)")
        table.add_row(_plain(sid), _plain(graded_name(Path(r.path), f"{assignment.id}.ipynb")),
                      f"{total:g}/{possible:g}", f"-{penalty:g}%" if penalty else "",
                      f"{final:g}", str(counts["passed"]), str(counts["failed"]), str(counts["timeout"]),
                      "; ".join(notes))
    console = Console()
    console.print(table)
    for problem in problems:
        console.print(_plain(problem), soft_wrap=True)
    if reads:
        console.print(f"to read by hand ({len(reads)}): code that reaches into the interpreter, files, other processes "
                      "or a library's own code, which graded code never needs (points unchanged):", soft_wrap=True)
        for sid, found in reads:
            console.print(_plain(f"  {sid}: {found[0]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")),
                          soft_wrap=True)
    _print_found(not_handins, handin_problems)
    if skipped:
        console.print(f"{len(skipped)} unchanged submissions were not regraded (--force regrades them)", soft_wrap=True)


def _print_found(not_handins: list[tuple[str, str]], handin_problems: list[tuple[str, str]]) -> None:
    """What the paths held besides hand-ins to grade: entries that are none, hand-ins to check."""
    from rich.console import Console

    console = Console()
    if not_handins:
        console.print(f"entries not graded ({len(not_handins)}):", soft_wrap=True)
        for entry, why in not_handins:
            console.print(_plain(f"  {entry}: {why}"), soft_wrap=True)
    if handin_problems:
        console.print(f"hand-ins to check ({len(handin_problems)}):", soft_wrap=True)
        for who, why in handin_problems:
            console.print(_plain(f"  {who}: {why}"), soft_wrap=True)


def cmd_export(course: Course, args: argparse.Namespace) -> int:
    """Write the gradebook of one assignment: LMS CSV, feedback pages or Gradescope results."""
    from autograder.exports.grades import (export_csv, export_students_csv, write_feedback_pages, write_gradescope_results,
                                    write_summary)
    from autograder.exports.manual import write_sheets

    assignment = course.get(args.assignment)
    with _existing_gradebook(args.gradebook) as gradebook:
        writers = {"html": write_feedback_pages, "gradescope": write_gradescope_results, "summary": write_summary,
                   "manual": write_sheets}
        if args.format == "moodle":
            return _export_moodle(course, assignment, gradebook, args)
        if args.format in writers:
            if not args.output:
                print(f"autograder: error: --format {args.format} writes several files: give --output FOLDER",
                      file=sys.stderr)
                return 2
            print(f"wrote {len(writers[args.format](gradebook, assignment, args.output))} files under {args.output}")
        elif args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            export_csv(gradebook, assignment, args.output)
            print(f"wrote {args.output}")
            if course.roster:
                students = args.output.with_name(f"{args.output.stem}_students.csv")
                export_students_csv(gradebook, assignment, course.roster, students)
                print(f"wrote {students} (one row per student of the roster)")
        else:
            export_csv(gradebook, assignment, sys.stdout)
    return 0


def _existing_gradebook(path: Path) -> Gradebook:
    """Exports and imports read a gradebook that grading wrote; they never create an empty one."""
    if not path.is_file():
        raise GradebookError(f"{path}: no gradebook here; grade first, or pass --gradebook PATH")
    return Gradebook.open(path)


def _export_moodle(course: Course, assignment, gradebook: Gradebook, args: argparse.Namespace) -> int:
    from autograder.exports.moodle import export_moodle

    if not args.worksheet or not args.output:
        print("autograder: error: --format moodle needs --worksheet FILE (downloaded from Moodle) and --output FILE",
              file=sys.stderr)
        return 2
    filled, missing = export_moodle(gradebook, assignment, course.roster, args.worksheet, args.output)
    print(f"wrote {args.output}: {filled} participants graded, {missing} without a graded hand-in (left as they "
          "were); upload it in Moodle: View all submissions > Upload grading worksheet")
    return 0


def cmd_similarity(course: Course, args: argparse.Namespace) -> int:
    """Compare the code of hand-ins read as `grade` reads them: pairwise, against earlier years' hand-ins
    and against public code; write the report (HTML, CSV, JSON)."""
    from autograder.similarity.report import analyse, write_report

    assignment = course.get(args.assignment)
    if not args.paths and not args.past:
        print("autograder: error: name the hand-ins to compare (PATH), or --past folders to index", file=sys.stderr)
        return 2
    handins, not_handins, handin_problems = _handins_to_grade(course, assignment, args)
    analysis = analyse(assignment, handins, args.past, args.public, args.index)
    written = write_report(analysis, args.output)
    result = analysis.result
    outliers = [m for m in result.pairs if m.outlier]
    read, reused = analysis.indexed
    print(f"{assignment.id}: {analysis.teams} hand-ins, {len(result.pairs)} pairs, {len(outliers)} outlier pairs, "
          f"{len(result.clusters)} clusters; {analysis.past} earlier hand-ins, {analysis.public} public files "
          f"({read} read, {reused} from the index {args.index}) in {analysis.seconds:.1f} s")
    for m in outliers[:10]:
        print(_plain(f"  {m.score:.2f}  {m.a} ~ {m.b} (most alike: {m.best_unit})"))
    for entry, why in not_handins + handin_problems + analysis.not_read:
        print(_plain(f"  not compared or to check: {entry}: {why}"), file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)) + " (similarity, not a verdict: read the code side by side)")
    return 0


def cmd_import_manual(course: Course, args: argparse.Namespace) -> int:
    """Record hand-given points from a filled-in sheet; all rows or none."""
    from autograder.exports.manual import import_sheet

    assignment = course.get(args.assignment)
    with _existing_gradebook(args.gradebook) as gradebook:
        recorded = import_sheet(gradebook, assignment, args.sheet, args.grader)
    print(f"recorded {recorded} hand-given scores for {assignment.id} in {args.gradebook}")
    return 0


def cmd_serve(course: Course, args: argparse.Namespace) -> int:
    """The TAs' web workspace over the gradebook; with --add-grader, make a grader's token and stop."""
    if args.add_grader is not None:
        with Gradebook.open(args.gradebook) as gradebook:
            token = gradebook.add_grader(args.add_grader, instructor=args.instructor)
        role = "instructor" if args.instructor else "grader"
        print(f"{role} {args.add_grader}: open {_workspace_url(args, token)} (an earlier token of this name no "
              "longer works); keep the link private: it grades in this name")
        return 0
    import uvicorn

    from autograder.web.app import create_app

    with Gradebook.open(args.gradebook) as gradebook:
        first = None if any(g.instructor for g in gradebook.graders()) else gradebook.add_grader("instructor", True)
    hosts = frozenset(h.lower() for h in [*args.allow_host, *([] if args.host in ("0.0.0.0", "::") else [args.host])])
    app = create_app(course, args.gradebook, hosts=hosts)
    if first:
        print(f"the first instructor's link (shown once): {_workspace_url(args, first)}")
    print(f"serving {args.gradebook} on http://{args.host}:{args.port}/; graders open the link their token came with "
          f"(`autograder serve --add-grader NAME` makes one)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _workspace_url(args: argparse.Namespace, token: str) -> str:
    host = args.allow_host[0] if args.allow_host else args.host
    return f"http://{f'[{host}]' if ':' in host else host}:{args.port}/?token={token}"


def cmd_pack(course: Course | None, args: argparse.Namespace) -> int:
    """Write a team's hand-in archive; works without the course config (students have the release only)."""
    from autograder.student.packing import members_for, pack

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    members = members_for(args.team, members, course.roster if course else None)
    archive = pack(args.notebook, args.team, members, args.output, _validation(args.notebook, args.no_checks))
    print(f"wrote {archive}: hand it in as it is")
    return 0


def _validation(notebook: Path, no_checks: bool) -> dict:
    """What `validate` finds, printed for the student and kept in the hand-in for the course staff."""
    from autograder.student.validate import ValidateError, validate_notebook

    try:
        report = validate_notebook(notebook, run_checks=not no_checks)
    except ValidateError as exc:
        print(f"validate could not check {notebook.name}: {exc}", file=sys.stderr)
        return {"error": str(exc)}
    print(report.format() + "\n")
    return {"problems": report.problems, "notes": report.notes,
            "checks": None if report.checks is None
            else [{"check": name, "passed": ok} for name, ok, _ in report.checks]}


def cmd_validate(course: Course | None, args: argparse.Namespace) -> int:
    """What would cost a notebook points beyond wrong results; the student's check before handing in."""
    from autograder.student.validate import DEFAULT_TIMEOUT_S, ValidateError, validate_notebook

    if args.timeout is not None and not args.timeout > 0:
        print(f"autograder: error: --timeout must be a positive number of seconds, not {args.timeout:g}",
              file=sys.stderr)
        return 2
    try:
        report = validate_notebook(args.notebook, release=args.release, run_checks=not args.no_checks,
                                   timeout=args.timeout or DEFAULT_TIMEOUT_S)
    except ValidateError as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return report.exit_status


def _intake_arguments(command: argparse.ArgumentParser, paths: str) -> None:
    """What `grade` and `similarity` read hand-ins from, the same way."""
    command.add_argument("assignment", metavar="ASSIGNMENT")
    command.add_argument("paths", nargs=paths, type=Path, metavar="PATH",
                         help="notebooks, folders, packed .zip hand-ins or a Moodle download; the submission id is "
                              "the file or folder name")
    command.add_argument("--gradebook", type=Path, default=DEFAULT_PATH,
                         help="SQLite gradebook; a Moodle download is kept unpacked beside it (default: %(default)s)")
    command.add_argument("--moodle-worksheet", type=Path, metavar="FILE",
                         help="with a Moodle download: its grading worksheet CSV, the source of hand-in times, "
                              "groups and extensions")
    command.add_argument("--extensions", type=Path, metavar="FILE",
                         help="due dates granted to teams or students: a CSV with the columns who (team or student "
                              "id) and due (YYYY-MM-DD HH:MM); Moodle's worksheet brings its own")
    command.add_argument("--pick", action="append", default=[], metavar="TEAM=FILE",
                         help="the notebook to read of a hand-in that holds several (as `hand-ins to check` lists "
                              "them); repeat for several hand-ins; kept in the course folder's picks.csv for reruns")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description="Release, grade and export course assignments.")
    parser.add_argument(
        "--course-root", type=Path, metavar="DIR",
        help="folder holding course_config.py (default: the nearest one at or above the current folder)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    release = commands.add_parser(
        "release", help="compile source/<a>/ into the student release release/<a>/",
        description="Compile source notebooks into student notebooks; refuses when a hidden line would leak.",
    )
    release.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                         help="assignment ids (default: every assignment in course_config.py)")
    release.add_argument("--check", action="store_true",
                         help="write nothing; exit 1 naming each file that is stale, missing, extra or leaking")
    release.add_argument("--no-verify", action="store_true",
                         help="write without first grading the solution (full marks) and the release (zero)")
    release.add_argument("--jobs", type=int, help="parallel grading workers for the verification (default: CPU count)")
    release.set_defaults(run=cmd_release)

    new = commands.add_parser(
        "new", help="start an assignment: source notebook, public checks, hidden suite, samples, config entry",
        description="Create source/<a>/, grader_tests/<a>/, samples/<a>/ (with expected.json), docs/mistakes/<a>.md "
                    "and the course_config.py entry around one example task, and compile release/<a>/; "
                    "`autograder verify <a>` passes right after it.")
    new.add_argument("assignment", metavar="ASSIGNMENT", help="the new assignment's id, e.g. 05_pruning_lora")
    new.add_argument("--title", required=True, help="the assignment's title")
    new.add_argument("--due", metavar="'YYYY-MM-DD HH:MM'", help="due date (default: 14 days from today, 23:59)")
    new.set_defaults(run=cmd_new)

    verify = commands.add_parser("verify", help="prove the solution scores full marks and the release zero (and, "
                                                "with --samples, each sample its expected score)")
    verify.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                        help="assignment ids (default: every assignment in course_config.py)")
    verify.add_argument("--jobs", type=int, help="parallel grading workers (default: CPU count)")
    verify.add_argument("--mutants", action="store_true",
                        help="also grade mutants of the solution; fail an assignment whose mutation score is below "
                             "its mutation_threshold in course_config.py")
    verify.add_argument("--max", type=int, metavar="N", help="with --mutants: grade at most N mutants (a fixed sample)")
    verify.add_argument("--samples", action="store_true",
                        help="also grade samples/<a>/ and print one line per sample whose points differ from "
                             "samples/<a>/expected.json (`points`, plus `gpu_points` on a GPU runner)")
    verify.set_defaults(run=cmd_verify)

    mutants = commands.add_parser(
        "mutants", help="how strong is the hidden suite: grade small changes of the solution, list the survivors",
        description="Mutate the solution (off-by-ones, swapped operators, changed dims and constants, deleted "
                    "statements, ...) and grade each mutant with the hidden suite; a mutant the suite lets through "
                    "is listed with its diff and the tests it passed.")
    mutants.add_argument("assignments", nargs="*", metavar="ASSIGNMENT",
                         help="assignment ids (default: every assignment in course_config.py)")
    mutants.add_argument("--max", type=int, metavar="N",
                         help="grade at most N mutants, a sample drawn with a fixed seed (default: all)")
    mutants.add_argument("--jobs", type=int, help="parallel grading workers (default: CPU count)")
    mutants.add_argument("--html", type=Path, metavar="DIR", help="also write DIR/<assignment>_mutants.html")
    mutants.set_defaults(run=cmd_mutants)

    grade = commands.add_parser("grade", help="grade submissions (notebooks, folders, LMS downloads)")
    _intake_arguments(grade, "+")
    grade.add_argument("--jobs", type=int, help="parallel grading workers (default: CPU count)")
    grade.add_argument("--force", action="store_true", help="regrade submissions that are already current")
    grade.add_argument("--executor", choices=["pool", "slurm", "submitit-local"], default="pool",
                       help="pool: workers on this machine (default); slurm: cluster jobs through submitit, each "
                            "grading --chunk-size submissions; submitit-local: submitit's local executor (tests the "
                            "cluster path)")
    grade.add_argument("--chunk-size", type=int, default=8, metavar="N",
                       help="with --executor slurm: submissions per cluster job, which pays the start of its "
                            "grading process (seconds) once (default: %(default)s)")
    grade.add_argument("--cluster-folder", type=Path, default=Path("out/submitit"),
                       help="where submitit keeps job logs and results (default: %(default)s)")
    grade.add_argument("--slurm-partition", help="Slurm partition for --executor slurm")
    grade.add_argument("--pending-gpu", action="store_true",
                       help="on a GPU runner: run only the GPU-marked tests of submissions whose grade waits for them "
                            "and complete those grades in the same gradebook (the CPU results stay)")
    grade.add_argument("--profile", type=Path, metavar="FILE",
                       help="write where the time went, per submission and stage, to FILE (JSON; bench/stages.py "
                            "prints it as a table)")
    grade.add_argument("--no-isolation", action="store_true",
                       help="grade without the sandbox's walls (process separation only), where the kernel "
                            "forbids the namespaces they need")
    grade.set_defaults(run=cmd_grade)

    export = commands.add_parser("export", help="write grades for the LMS")
    export.add_argument("assignment", metavar="ASSIGNMENT")
    export.add_argument("--format", choices=["csv", "html", "gradescope", "summary", "manual", "moodle"], default="csv",
                        help="csv: one row per submission for the LMS (and, with a roster, <name>_students.csv: "
                             "one row per student); html: a feedback page per team; gradescope: results.json per "
                             "submission; summary: instructor overview with plots; manual: reflections to grade "
                             "by hand (HTML to read, CSV to fill in for import-manual); moodle: the grading worksheet "
                             "(--worksheet) filled with grades and comments, for Moodle's upload")
    export.add_argument("--worksheet", type=Path, metavar="FILE", help="with --format moodle: the grading worksheet "
                                                                        "downloaded from Moodle")
    export.add_argument("--gradebook", type=Path, default=DEFAULT_PATH, help="SQLite gradebook (default: %(default)s)")
    export.add_argument("--output", type=Path,
                        help="file (csv; default: standard output) or folder (html, gradescope) to write")
    export.set_defaults(run=cmd_export)

    similarity = commands.add_parser(
        "similarity", help="which teams' code came from each other, from earlier years or from public code",
        description="Read hand-ins as `grade` does and compare their code function by function, the release's "
                    "template left out: every pair of this cohort, each team against earlier years' hand-ins "
                    "(--past, indexed once) and against public code (--public). Writes an HTML report, CSV and "
                    "JSON; it shows similarity, not a verdict.")
    _intake_arguments(similarity, "*")
    similarity.add_argument("--past", type=Path, action="append", default=[], metavar="DIR",
                            help="a folder of earlier years' hand-ins of this assignment (repeatable)")
    similarity.add_argument("--public", type=Path, action="append", default=[], metavar="DIR",
                            help="a folder of public code: known solutions, library source (.py, .ipynb; "
                                 "repeatable)")
    similarity.add_argument("--output", type=Path, required=True, metavar="DIR",
                            help="folder for <assignment>_similarity.html, .csv and .json")
    similarity.add_argument("--index", type=Path, default=Path("similarity_index.db"), metavar="FILE",
                            help="where what was read is kept, so earlier years are read once "
                                 "(default: %(default)s)")
    similarity.set_defaults(run=cmd_similarity)

    manual = commands.add_parser("import-manual", help="record the points of a filled-in reflections sheet",
                                 description="Check every row of the sheet `export --format manual` wrote, then "
                                             "record its points; any problem refuses the whole file.")
    manual.add_argument("assignment", metavar="ASSIGNMENT")
    manual.add_argument("sheet", type=Path, metavar="FILE.csv")
    manual.add_argument("--gradebook", type=Path, default=DEFAULT_PATH, help="SQLite gradebook (default: %(default)s)")
    manual.add_argument("--grader", help="name recorded for rows without one (default: your user name)")
    manual.set_defaults(run=cmd_import_manual)

    serve = commands.add_parser(
        "serve", help="the TAs' web workspace: overview, team pages, grading by question with rubrics",
        description="Serve the gradebook to graders' browsers: bound to 127.0.0.1 unless told otherwise; each "
                    "grader opens a link with their own token (--add-grader NAME makes one). The first start "
                    "makes an instructor's token and prints its link.")
    serve.add_argument("--gradebook", type=Path, default=DEFAULT_PATH, help="SQLite gradebook (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a host name browsers use to reach this server (behind a proxy or JupyterHub); "
                            "requests naming any other host are refused")
    serve.add_argument("--add-grader", metavar="NAME",
                       help="make (or renew) the token of grader NAME, print its link and stop")
    serve.add_argument("--instructor", action="store_true",
                       help="with --add-grader: an instructor (edits rubrics, overrides, reveals team names)")
    serve.set_defaults(run=cmd_serve)

    pack = commands.add_parser("pack", help="students: pack your notebook into the hand-in archive of your team",
                               description="Validate the notebook (its findings are printed and kept in the "
                                           "archive), then write <team>_<notebook>.zip holding it and handin.json "
                                           "(team, member ids, time, notebook hash, validation).")
    pack.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    pack.add_argument("--team", required=True, help="your team id")
    pack.add_argument("--members", default="", help="your team's student ids, comma-separated "
                                                    "(default: from the course roster where there is one)")
    pack.add_argument("--output", type=Path, help="archive to write (default: next to the notebook)")
    pack.add_argument("--no-checks", action="store_true", help="validate without running the public checks")
    pack.set_defaults(run=cmd_pack, course_optional=True)

    validate = commands.add_parser(
        "validate", help="before handing in: what would cost the notebook points beyond wrong results",
        description="Read the notebook as the grader does and list graded functions that are missing or have "
                    "another signature, code they rely on that does not run when grading, imports the grader lacks, "
                    "edited locked cells and forbidden library calls; then run the public checks. Exit 1 when "
                    "something would cost points. Needs no course config: the release notebook carries what it checks.")
    validate.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    validate.add_argument("--release", type=Path, metavar="PATH",
                          help="the release notebook (or its folder) to compare with, for a notebook that was not "
                               "started from it (default: the notebook's own release metadata)")
    validate.add_argument("--no-checks", action="store_true", help="skip the public checks (no student code runs)")
    validate.add_argument("--timeout", type=float, metavar="S",
                          help="seconds each task's public checks may take (default: 60)")
    validate.set_defaults(run=cmd_validate, course_optional=True)
    return parser


def _not_a_module_to_reimport() -> None:
    """Worker and sandbox processes start through multiprocessing's forkserver, which re-runs the main
    script (this console script, or `python -m autograder.cli`) in every process it starts: about a
    second per sandbox spent importing the CLI and nbgrader. Nothing in a child needs it."""
    script = sys.modules.get("__main__")
    if script is not None and getattr(script, "main", None) is main:
        script.__spec__ = None
        script.__dict__.pop("__file__", None)


def _course(args: argparse.Namespace) -> Course | None:
    """The course; commands students run on their own machines also work without its config."""
    try:
        return load_course(args.course_root)
    except ConfigError:
        if getattr(args, "course_optional", False) and not args.course_root:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    from autograder.grading.timings import process_age_s

    cli_start_s = process_age_s()
    _not_a_module_to_reimport()
    args = _parser().parse_args(argv)
    args.cli_start_s = cli_start_s
    try:
        return args.run(_course(args), args)
    except (ConfigError, GradebookError, SubmissionFormatError, ExportError, MoodleError, ManualError,
            PackError) as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
