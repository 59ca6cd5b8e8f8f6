"""No hand-in stops, hangs or fools a batch: a few hundred malformed hand-ins graded beside correct ones.

The batch is generated from a fixed seed, of the kinds LMS downloads and students produce: truncated and
re-encoded files, wrong JSON shapes, odd metadata, broken characters, deep nesting, huge cells, links to
the solution, another team or /dev/zero, FIFOs, names that are not UTF-8, markup or formulas. Most are
refused while reading and never reach a sandbox, which keeps the batch cheap.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
from conftest import ASSIGNMENT, CORRECT

from autograder.cli import main
from autograder.course.gradebook import Gradebook, safe_text

pytestmark = pytest.mark.slow

SEED = 20270427
MALFORMED = 300
CONTROLS = 3


def notebook_json(*sources: str, **cell_fields) -> dict:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    for cell in nb.cells:
        cell.update(cell_fields)
    return nb


def dumps(nb) -> bytes:
    return (json.dumps(nb, indent=1) + "\n").encode()


CORRECT_BYTES = dumps(notebook_json(CORRECT))

# What a reading failure says, by kind: each is refused before any sandbox starts.
UNREADABLE = {
    "truncated": (lambda rng: CORRECT_BYTES[:rng.randrange(1, len(CORRECT_BYTES) - 3)], "is cut off"),
    "utf-16": (lambda rng: CORRECT_BYTES.decode().encode(rng.choice(["utf-16", "utf-16-le", "utf-32"])), "UTF-16"),
    "latin-1": (lambda rng: CORRECT_BYTES.replace(b"import torch", "import torch  # café".encode("latin-1")),
                "not UTF-8 text"),
    "garbage": (lambda rng: b"\xff" + rng.randbytes(rng.randrange(1, 200)), "not UTF-8 text"),
    "empty": (lambda rng: rng.choice([b"", b"\n", b"   "]), "is empty"),
    "invalid-json": (lambda rng: CORRECT_BYTES.replace(b'"cells": [', b'"cells": [,', 1), "is not valid JSON"),
    "two-notebooks": (lambda rng: CORRECT_BYTES + CORRECT_BYTES, "more text after the end of the notebook"),
    "json-value": (lambda rng: rng.choice([b"[1, 2]", b"3", b'"notebook"', b"null", b"true"]), "holds a JSON"),
    "no-cells": (lambda rng: json.dumps({"nbformat": 4, "worksheets": []}).encode(), 'it has no "cells"'),
    "cells-not-a-list": (lambda rng: json.dumps({"nbformat": 4, "cells": rng.choice([{}, 3, "x"])}).encode(),
                         'has "cells" that are a'),
    "other-format": (lambda rng: json.dumps({"nbformat": rng.choice([5, "4", 4.5, None]), "cells": []}).encode(),
                     "notebook format"),
    "broken-format-3": (lambda rng: json.dumps({"nbformat": 3, "worksheets": [[1]]}).encode(), "old notebook"),
    "nested-json": (lambda rng: b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
}
# Hand-in folders whose notebook cannot be used, and what their row says.
FOLDERS = {
    "no-notebook": "found none",
    "two-notebooks": "found 2",
    "fifo-notebook": "is a FIFO",
    "link-to-solution": "is a symbolic link",
    "link-to-sample": "is a symbolic link",
    "link-to-other-team": "is a symbolic link",
    "link-to-dev-zero": "is a symbolic link",
    "too-big": "the grader reads notebooks up to",
}
ODD_NAMES = [b"caf\xe9", b"team\xff\xfe", b"[bold red]team", b"=SUM(A1:A9)", b"+1", b"@SUM(A1)",
             b"-rf", b"team :smile:", b"team\nnewline", b"team\x1b[2J", "tëam ✓".encode(), b"x" * 300]
# Correct code beside something odd: full marks all the same, with a warning where one is due.
ODD_BUT_CORRECT = {
    "metadata-a-list": notebook_json(CORRECT, metadata=[1]),
    "nbgrader-not-a-dict": notebook_json(CORRECT, metadata={"nbgrader": "answer"}),
    "grade-a-string": notebook_json(CORRECT, metadata={"nbgrader": {"grade": "yes", "solution": "no"}}),
    "lone-surrogate": notebook_json(CORRECT, "NAME = 'caf\ud800'"),
    "deep-nesting": notebook_json(CORRECT, "VALUE = " + "-" * 100_000 + "1", "TOTAL = 1" + " + 1" * 100_000),
    "huge-cell": notebook_json(CORRECT, "DATA = 1\n" * 250_000),
    "broken-message": notebook_json(CORRECT, r"""BROKEN = exec("raise ValueError('\\udcff')")"""),
    "source-not-text": {**notebook_json(CORRECT), "cells": [nbformat.v4.new_code_cell(CORRECT),
                                                             {"cell_type": "code", "source": 3}]},
    "format-4.0": {**notebook_json(CORRECT), "nbformat": 4.0},
    # Beyond Python's int-from-text limit (4,300 digits): metadata the grader never uses.
    "huge-execution-count": dumps(notebook_json(CORRECT, execution_count=1)).replace(
        b'"execution_count": 1', b'"execution_count": ' + b"9" * 5000),
}
NOT_DEFINED_AT_GRADING = {"if-true": "if True:\n" + textwrap.indent(CORRECT, "    "),
                          "alias": CORRECT.replace("def top_k_filter", "def mine") + "top_k_filter = mine\n"}
PYTHON_INTERNALS = re.compile(r"^\w+(Error|Exception): |object has no attribute|expected at most|Traceback|"
                              r"internal error|NoneType|not subscriptable|unhashable|was it saved completely")


def build_batch(root: Path, batch: Path, rng: random.Random) -> tuple[dict[str, str], list[str], set[str]]:
    """The batch: {submission id: what its row must say ("" for full marks)}, the entries that must be
    named as not graded, and the ids of the controls."""
    solution = root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    sample = root / "samples" / "correct.ipynb"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_bytes(CORRECT_BYTES)
    expected, not_graded = {}, []
    controls = {f"control{i}" for i in range(CONTROLS)}
    for sid in controls:
        (batch / f"{sid}.ipynb").write_bytes(CORRECT_BYTES)
        expected[sid] = ""
    for kind, nb in ODD_BUT_CORRECT.items():
        (batch / f"{kind}.ipynb").write_bytes(nb if isinstance(nb, bytes) else dumps(nb))
        expected[kind] = ""
    for kind, source in NOT_DEFINED_AT_GRADING.items():
        (batch / f"{kind}.ipynb").write_bytes(dumps(notebook_json(source)))
        expected[kind] = "does not run when grading"

    kinds = sorted(UNREADABLE) + sorted(f"folder:{k}" for k in FOLDERS)
    for i in range(MALFORMED - len(ODD_BUT_CORRECT) - len(NOT_DEFINED_AT_GRADING)):
        kind, suffix = kinds[i % len(kinds)], f"-{i}".encode()
        base = ODD_NAMES[i // 5 % len(ODD_NAMES)] if i % 5 == 0 else b"team"
        if kind.startswith("folder:"):
            folder = Path(os.fsdecode(bytes(batch) + b"/" + base[:255 - len(suffix)] + suffix))  # names up to 255 bytes
            expected[safe_text(folder.name)] = FOLDERS[kind[7:]]
            make_folder(folder, kind[7:], solution, sample, batch, rng)
        else:
            path = Path(os.fsdecode(bytes(batch) + b"/" + base[:249 - len(suffix)] + suffix + b".ipynb"))
            make, says = UNREADABLE[kind]
            path.write_bytes(make(rng))
            expected[safe_text(path.stem)] = says

    (batch / "team999.zip").write_bytes(b"PK\x03\x04")  # a .zip is a hand-in: its row says it is unreadable
    expected["team999"] = "is not a readable .zip archive"
    (batch / "control0").mkdir()  # the id of control0.ipynb: the folder sorts first and is graded, the file not
    (batch / "control0" / "mine.ipynb").write_bytes(CORRECT_BYTES)
    not_graded.append("control0.ipynb")
    for entry, make in {".git": lambda p: p.mkdir(), ".DS_Store": lambda p: p.write_bytes(b"\0"),
                        "grades.csv": lambda p: p.write_text("team,points\n"),
                        "team998.tar.gz": lambda p: p.write_bytes(b"\x1f\x8b"),
                        "linked-solution.ipynb": lambda p: p.symlink_to(solution),
                        "linked-team": lambda p: p.symlink_to(solution.parent),
                        "fifo.ipynb": os.mkfifo}.items():
        make(batch / entry)
        not_graded.append(entry)
    return expected, not_graded, controls


def make_folder(folder: Path, kind: str, solution: Path, sample: Path, batch: Path, rng: random.Random) -> None:
    folder.mkdir()
    target = folder / f"{ASSIGNMENT}.ipynb"
    if kind == "no-notebook":
        (folder / "answers.py").write_text(CORRECT)
    elif kind == "two-notebooks":
        (folder / "a.ipynb").write_bytes(CORRECT_BYTES)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.ipynb").write_bytes(CORRECT_BYTES)
    elif kind == "fifo-notebook":
        os.mkfifo(target)
    elif kind == "too-big":
        with target.open("wb") as f:
            f.truncate(101 * 2**20)  # sparse: costs no disk
    else:
        targets = {"link-to-solution": solution, "link-to-sample": sample, "link-to-dev-zero": Path("/dev/zero"),
                   "link-to-other-team": batch / "control1.ipynb"}
        target.symlink_to(targets[kind])


def grade(root: Path, batch: Path, db: Path, capsys) -> tuple[int, str]:
    status = main(["--course-root", str(root), "grade", ASSIGNMENT, str(batch), "--gradebook", str(db)])
    return status, capsys.readouterr().out


def test_a_batch_of_malformed_hand_ins_is_recorded_row_by_row(make_course, tmp_path, capsys):
    root = make_course()
    batch, db = tmp_path / "lms", tmp_path / "gradebook.db"
    batch.mkdir()
    expected, not_graded, controls = build_batch(root, batch, random.Random(SEED))
    assert len(expected) >= MALFORMED + CONTROLS

    status, out = grade(root, batch, db, capsys)
    assert status == 0, out
    with Gradebook.open(db) as gradebook:
        rows = {r.submission_id: r for r in gradebook.submissions(ASSIGNMENT)}
    assert sorted(rows) == sorted(expected)
    full_marks = sorted(sid for sid, says in expected.items() if not says)
    assert sorted(sid for sid, r in rows.items() if r.status == "graded" and r.earned == r.possible == 1) == full_marks
    assert controls <= set(full_marks)
    for sid, says in expected.items():
        row = rows[sid]
        texts = [row.message, *row.load_messages.splitlines(), *(t.message for t in row.results)]
        assert not any(PYTHON_INTERNALS.search(text) for text in texts), (sid, texts)
        assert not says or says in row.message + row.load_messages, (sid, says, row.message, row.load_messages)
    assert f"entries not graded ({len(not_graded)}):" in out
    assert all(f"{batch / entry}: " in out for entry in not_graded), out

    status, out = grade(root, batch, db, capsys)
    assert status == 0, out
    assert f"{len(expected)} unchanged submissions were not regraded" in out
    with Gradebook.open(db) as gradebook:
        assert {r.submission_id: r.graded_at for r in gradebook.submissions(ASSIGNMENT)} == {
            sid: r.graded_at for sid, r in rows.items()}

    grades = tmp_path / "grades.csv"
    for export in (["--output", str(grades)], ["--format", "html", "--output", str(tmp_path / "feedback")],
                   ["--format", "gradescope", "--output", str(tmp_path / "gradescope")]):
        assert main(["--course-root", str(root), "export", ASSIGNMENT, "--gradebook", str(db), *export]) == 0
    ids = [row[0] for row in csv.reader(grades.open(encoding="utf-8"))][1:]
    assert len(ids) == len(expected) and not any(sid.startswith(("=", "+", "-", "@")) for sid in ids)
    assert len(list((tmp_path / "feedback").iterdir())) == len(list((tmp_path / "gradescope").iterdir())) == len(ids)
