"""Where the time of a `grade` command goes, stage by stage; prints a table (run: python bench/stages.py).

Grades, each with a cold `autograder grade --profile` into a fresh gradebook and 2 workers: the
bundled samples of every assignment, and the trivial two-question assignment of
`bench/nbgrader_compare.py` (19 submissions, no endless loop). Per-submission stages are the mean
over the batch; the batch's own stages (CLI start, forkserver start, the workers' start) are given
once. `--jobs N` changes the workers, `--only ID` grades one column.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from nbgrader_compare import Ours, grading_s, submissions
from table import print_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.course.config import load_course  # noqa: E402
from autograder.grading.timings import BATCH_STAGES, STAGES, per_submission, summary  # noqa: E402

BIN = Path(sys.executable).parent
TRIVIAL = "trivial (19)"


def profile(course_root: Path, assignment: str, batch: Path, jobs: int, folder: Path) -> dict:
    """Run one cold `grade --profile` and return its profile."""
    out = folder / f"{assignment}.json"
    done = subprocess.run([str(BIN / "autograder"), "--course-root", str(course_root), "grade", assignment, str(batch),
                           "--gradebook", str(folder / f"{assignment}.db"), "--jobs", str(jobs), "--profile", str(out)],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"grading {assignment} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(out.read_text())


def columns(prof: dict) -> dict[str, float]:
    """Stage -> seconds (`timings.summary`), the CLI's start, and the batch's grading and whole time."""
    values = {"CLI start": prof["cli_start_s"]} | summary([entry["stages"] for entry in prof["submissions"].values()])
    values["per submission, all its stages"] = sum(per_submission(values).values())
    values["grading, start to end (no start-up)"] = grading_s(prof)
    values["whole command"] = prof["command_s"]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", help=f"one assignment id, or {TRIVIAL.split()[0]!r}")
    args = parser.parse_args()
    course = load_course(ROOT)
    table: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "trivial"):
            Ours(folder / "trivial").grade(submissions(19, False), args.jobs, profile=folder / "trivial.json")
            prof = json.loads((folder / "trivial.json").read_text())
            table[TRIVIAL], counts[TRIVIAL] = columns(prof), len(prof["submissions"])
        for assignment in course.assignments.values():
            if args.only not in (None, assignment.id):
                continue
            prof = profile(ROOT, assignment.id, ROOT / "samples" / assignment.id, args.jobs, folder)
            table[assignment.id], counts[assignment.id] = columns(prof), len(prof["submissions"])
            print(f"{assignment.id}: {prof['command_s']:.1f} s", file=sys.stderr)
    header = ("stage (seconds; per submission: mean over the batch)",
              *(f"{name} ({counts[name]})" if name != TRIVIAL else name for name in table))
    rows = []
    for stage in [*STAGES, "per submission, all its stages", "grading, start to end (no start-up)", "whole command"]:
        kind = "batch" if stage in BATCH_STAGES and stage != "gradebook write" else ""
        label = f"{stage} (once per batch)" if kind else stage
        rows.append((label, *(f"{table[name][stage]:.3f}" for name in table)))
    print_table(rows, header=header)
    print(f"\n{args.jobs} workers; the whole command also waits for the batch's slowest submissions "
          "(01's endless loops spend their call timeouts).")


if __name__ == "__main__":
    main()
