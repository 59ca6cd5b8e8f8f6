"""How fast a sandbox starts; prints a table (run: python bench/grading_speed.py).

Compares, in one run on one machine, a cold process that imports torch and transformers (what every
sandbox would cost without the warm forkserver) against a sandbox forked from the warm forkserver,
with its walls (namespaces, whitelist root, unprivileged uid) and without them (process separation
only). Where a whole submission's time goes: `bench/stages.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from table import print_table

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 5


def cold_import_s() -> float:
    runs = []
    for _ in range(3):
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, transformers"], check=True)
        runs.append(time.perf_counter() - begin)
    return statistics.median(runs)


def warm_sandbox_start_s(assignment, code, isolate: bool = True) -> tuple[float, float]:
    from autograder.grading.oracle import GradingSession

    session = GradingSession(assignment, code, isolate)
    try:
        begin = time.perf_counter()
        session._ensure_sandbox()
        first = time.perf_counter() - begin
        starts = []
        for _ in range(REPEATS):
            session._drop_sandbox()
            session._ensure_sandbox()
            starts.append(session.sandbox_start_s[-1])
        return first, statistics.median(starts)
    finally:
        session.close()


def main() -> None:
    from autograder.course.config import load_course
    from autograder.grading.extraction import extract

    course = load_course(ROOT)
    rows = []
    cold = cold_import_s()
    first_assignment = next(iter(course.assignments.values()))
    code = extract(ROOT / "samples" / first_assignment.id / "correct.ipynb")
    first_start, warm_start = warm_sandbox_start_s(first_assignment, code)
    rows.append(("cold `import torch, transformers` (new process)", f"{cold:.2f} s", "1.0x"))
    rows.append(("sandbox start, forkserver cold (once per process; once per batch in `grade`)",
                 f"{first_start:.2f} s", f"{first_start / cold:.2f}x"))
    rows.append((f"sandbox start from the warm forkserver, walls built (median of {REPEATS})",
                 f"{warm_start * 1000:.0f} ms", f"{warm_start / cold:.3f}x"))
    _, bare_start = warm_sandbox_start_s(first_assignment, code, isolate=False)
    rows.append((f"sandbox start from the warm forkserver, no walls (median of {REPEATS})",
                 f"{bare_start * 1000:.0f} ms", f"{bare_start / cold:.3f}x"))
    print_table(rows, comparison="vs cold import")


if __name__ == "__main__":
    main()
