"""How fast the TAs' web workspace answers with a course's worth of hand-ins; prints a table
(run: python bench/web.py).

Generates a gradebook of 600 graded hand-ins, each with 10 automatic checks and a notebook on disk holding
5 reflection answers, half of them already graded with rubric items, then times the server (the whole ASGI
app, guards included, through Starlette's in-process client: no network) for the pages a grader waits for:
the next item of the grading queue (what `n` opens) and the course overview. Targets: p95 under 50 ms and
200 ms.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from table import print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import ASSIGNMENT, Cells, demo_cells, render_config, write_notebook, _CONFIG  # noqa: E402

from autograder.course.config import load_course  # noqa: E402
from autograder.course.gradebook import Gradebook, SubmissionResult, TestResult  # noqa: E402
from autograder.web.app import create_app  # noqa: E402

HANDINS, CELLS, CHECKS, REQUESTS = 600, 5, 10, 200


def course(root: Path) -> list[str]:
    """A course whose notebook has CELLS reflections; returns their grade ids."""
    (root / "course_config.py").write_text(render_config(_CONFIG))
    ids = [f"reflection_{i}" for i in range(CELLS)]
    write_notebook(root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                   demo_cells()[:-1] + [Cells.reflection(g, f"model answer {g}") for g in ids])
    return ids


def gradebook(root: Path, cells: list[str]) -> tuple[Path, str]:
    db = root / "gradebook.db"
    at = dt.datetime(2027, 4, 28, tzinfo=dt.timezone.utc)
    with Gradebook.open(db) as gb:
        items = [gb.add_rubric_item(ASSIGNMENT, g, f"item {k}", 0.5, "prof").item_id for g in cells for k in range(4)]
        for n in range(HANDINS):
            sid = f"team{n:03d}"
            nb = write_notebook(root / "handins" / sid / f"{ASSIGNMENT}.ipynb", demo_cells()[:-1] + [
                Cells.reflection(g, f"answer of {sid} to {g}: " + "words " * 80) for g in cells])
            gb.record(SubmissionResult(ASSIGNMENT, sid, str(nb.parent), "nb", "suite", "0.1", "cpu", "graded", "", [
                TestResult(f"test_q.py::test_{k}", f"q{k % 3}", "passed" if (n + k) % 4 else "failed",
                           1.0 if (n + k) % 4 else 0.0, 1.0, "" if (n + k) % 4 else "wrong shape", 0.1)
                for k in range(CHECKS)], graded_at=at))
            if n % 2:
                for g in cells:
                    gb.save_manual(ASSIGNMENT, sid, g, 2, items[cells.index(g) * 4:][:2], 0, "fine", "ta1", 0)
        token = gb.add_grader("prof", instructor=True)
    return db, token


def p95_ms(client: TestClient, paths) -> tuple[float, float]:
    times = []
    for path in paths:
        begin = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - begin) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times), statistics.quantiles(times, n=20)[-1]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cells = course(root)
        begin = time.perf_counter()
        db, token = gradebook(root, cells)
        built = time.perf_counter() - begin
        app = create_app(load_course(root), db)
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            client.get(f"/?token={token}")
            queue = [client.get(f"/a/{ASSIGNMENT}/grade/{g}", follow_redirects=False).headers["location"]
                     for g in cells]
            client.get(queue[0])  # warm: templates compiled, notebook module imported
            keys = sorted({k for k in client.get("/").text.split('/team/')[1:]})[:REQUESTS]
            items = [f"/a/{ASSIGNMENT}/grade/{cells[i % CELLS]}/{k.split(chr(34))[0]}" for i, k in enumerate(keys)]
            item = p95_ms(client, (items * 2)[:REQUESTS])
            overview = p95_ms(client, ["/"] * 40)
    print(f"{HANDINS} hand-ins x {CELLS} reflection cells, {CHECKS} checks each (gradebook built in {built:.0f} s); "
          f"{REQUESTS} queue items, 40 overviews\n")
    print_table([("next item of the grading queue", f"{item[0]:.1f} ms", f"{item[1]:.1f} ms", "50 ms"),
                 ("course overview", f"{overview[0]:.1f} ms", f"{overview[1]:.1f} ms", "200 ms")],
                header=("page", "median", "p95", "target (p95)"))


if __name__ == "__main__":
    main()
