"""How well `autograder similarity` ranks copies above independent work, beside copydetect, and how fast it is.

Negatives: independently written implementations of each assignment (bench/similarity_impl/, written from
the release notebooks' text in different styles, and the samples' correct and alternative_correct
notebooks). Positives: a copy of each made by one disguise (bench/similarity_disguises.py), all of them
combined, and partial copies (another implementation whose largest graded function, renamed and
re-commented, was copied). Each disguise is its own cohort per assignment: the implementations and one
copy of each. Pairs of different authors are negatives; a partial copy and the implementation it was
built on are left out (neither copy nor independent). Every implementation carries two lines of its own
(a comment with a typo and an odd constant); the last positive case is a rewrite (another team's code,
all disguises) that kept the original's two lines, ranked once by score and once by the lines only the
pair shares.

Per disguise: AUC of copy pairs against independent pairs, precision at k (k = number of copy pairs)
and the gap between the copies' 25th and the independents' 75th percentile of scores, for both tools;
copydetect (`pip install .[bench]`) reads the same notebooks converted to scripts, with the release's
script as boilerplate. `--speed` times 60 teams x 4 assignments plus 1,000 earlier hand-ins.

    .venv/bin/python bench/similarity.py [--speed] [--json FILE]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from similarity_disguises import DISGUISES, comments, copy_function, disguise, rename  # noqa: E402

from autograder.course.config import load_course  # noqa: E402
from autograder.grading.extraction import extract  # noqa: E402
from autograder.grading.handins import discover  # noqa: E402
from autograder.grading.teams import Handin  # noqa: E402
from autograder.similarity.report import analyse  # noqa: E402
from autograder.similarity.sources import graded_names  # noqa: E402

ASSIGNMENTS = ["01_intro", "02_transformer_architecture", "03_efficient_inference_part_1",
               "04_efficient_inference_part_2"]
PARTIAL = "partial copy (one function)"
RARE = "rewritten, a comment and an odd constant kept"
_TYPOS = ["recieve", "seperate", "definately", "occured", "begining", "untill", "wich", "lenght"]


def signature(assignment: str, style: str) -> str:
    """Two lines only this implementation has, as a team leaves them: a comment with a typo and an odd
    constant."""
    rng = random.Random(zlib.crc32(f"{assignment}|{style}".encode()))
    return (f"# {style}: {rng.choice(_TYPOS)} the values first, {rng.choice(_TYPOS)} the loop ends\n"
            f"EPS = {rng.randint(11, 99) / 10}e-{rng.randint(5, 9)}\n")


def implementations(assignment: str) -> dict[str, str]:
    """Style -> the code of one independent implementation (its definitions, imports and constants)."""
    found = {p.stem.split("__")[1]: p.read_text() for p in sorted((ROOT / "bench" / "similarity_impl").glob(
        f"{assignment}__*.py"))}
    for sample in ("correct", "alternative_correct"):
        code = extract(ROOT / "samples" / assignment / f"{sample}.ipynb")
        found[f"sample_{sample}"] = "\n\n".join(
            ast.unparse(ast.parse(c.source).body[i]) for c in code.cells for i in c.keep)
    return found


def notebook(release: Path, code: str, graded: list[str], kept: str = "") -> nbformat.NotebookNode:
    """The release notebook with each answer cell holding the implementation's definitions of its graded
    names; imports, constants and helpers go into the first answer cell, after `kept` (lines as written)."""
    nb = nbformat.read(release, as_version=4)
    body = ast.parse(code).body
    placed = set()
    answers = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    for cell in answers:
        names = {getattr(n, "name", None) for n in ast.parse(cell.source).body} & set(graded)
        mine = [n for n in body if getattr(n, "name", None) in names]
        placed.update(id(n) for n in mine)
        cell.source = "\n\n\n".join(ast.unparse(n) for n in mine)
    rest = [n for n in body if id(n) not in placed]
    answers[0].source = kept + "\n\n".join(ast.unparse(n) for n in rest) + "\n\n\n" + answers[0].source
    return nb


def _largest(code: str, graded: list[str]) -> str:
    sizes = {n.name: len(ast.unparse(n)) for n in ast.parse(code).body if getattr(n, "name", None) in graded}
    return max(sizes, key=sizes.get)


def cohort(assignment: str, kind: str, folder: Path) -> tuple[list[tuple[str, str]], dict[str, set[str]]]:
    """Write one cohort's notebooks; returns the copy pairs and the implementations each notebook holds
    code of (a pair is independent when they hold none in common)."""
    course = load_course(ROOT)
    release = course.get(assignment).release_dir / f"{assignment}.ipynb"
    graded = graded_names(release)
    impls = implementations(assignment)
    styles = sorted(impls)
    folder.mkdir(parents=True, exist_ok=True)
    copies, sources = [], {style: {style} for style in styles}
    for i, style in enumerate(styles):
        nbformat.write(notebook(release, impls[style], graded, signature(assignment, style)), folder / f"{style}.ipynb")
        seed = zlib.crc32(f"{assignment}|{kind}|{i}".encode())
        host = styles[(i + 1) % len(styles)]
        kept = ""
        if kind == PARTIAL:
            name = _largest(impls[style], graded)
            donor = disguise(impls[style], [rename, comments], seed, set(graded))
            code = copy_function(impls[host], donor, name)
            sources[f"{style}_copy"] = {style, host}
        elif kind == RARE:  # the code is another team's, disguised; the copied comment and constant stayed
            code = disguise(impls[host], DISGUISES["all combined"], seed, set(graded))
            kept = signature(assignment, style)
            sources[f"{style}_copy"] = {style, host}
        else:
            code = disguise(impls[style], DISGUISES[kind], seed, set(graded))
            sources[f"{style}_copy"] = {style}
        nbformat.write(notebook(release, code, graded, kept), folder / f"{style}_copy.ipynb")
        copies.append((style, f"{style}_copy"))
    return copies, sources


def ours(assignment: str, folder: Path, rare: dict | None = None) -> dict[frozenset[str], float]:
    """Pair -> score; `rare`, when given, gets pair -> the number of lines only these two share."""
    course = load_course(ROOT)
    handins = {sid: Handin(path) for sid, path in discover([folder]).handins.items()}
    analysis = analyse(course.get(assignment), handins, [], [], None)
    if rare is not None:
        rare.update({frozenset((m.a, m.b)): len(m.rare_lines) for m in analysis.result.pairs})
    return {frozenset((m.a, m.b)): m.score for m in analysis.result.pairs}


def theirs(assignment: str, folder: Path, scripts: Path) -> dict[frozenset[str], float]:
    """copydetect on the notebooks as scripts (every code cell, as `jupyter nbconvert --to script` keeps
    them), the release's script as boilerplate; a pair's score is the larger of its two overlaps."""
    from copydetect import CopyDetector

    course = load_course(ROOT)
    (scripts / "cohort").mkdir(parents=True)
    (scripts / "template").mkdir()
    for nb in sorted(folder.glob("*.ipynb")):
        (scripts / "cohort" / f"{nb.stem}.py").write_text(_script(nb))
    (scripts / "template" / "release.py").write_text(_script(course.get(assignment).release_dir / f"{assignment}.ipynb"))
    detector = CopyDetector(test_dirs=[str(scripts / "cohort")], boilerplate_dirs=[str(scripts / "template")],
                            extensions=["py"], display_t=0.0, autoopen=False, silent=True)
    detector.run()
    names = [Path(f).stem for f in detector.test_files]
    scores = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                scores[frozenset((a, b))] = float(max(detector.similarity_matrix[i, j]))
    return scores


def _script(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "code")


def metrics(positives: list[float], negatives: list[float]) -> dict:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    k = len(positives)
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives], key=lambda x: -x[0])
    q25 = statistics.quantiles(positives, n=4, method="inclusive")[0]
    q75 = statistics.quantiles(negatives, n=4, method="inclusive")[2]
    return {"auc": wins / (len(positives) * len(negatives)), "precision_at_k": sum(x[1] for x in ranked[:k]) / k,
            "gap": q25 - q75, "all_copies_above": min(positives) > max(negatives),
            "min_copy": min(positives), "max_independent": max(negatives)}


def quality(work: Path) -> dict:
    table = {}
    for kind in [*DISGUISES, PARTIAL, RARE]:
        scores = {"ours": ([], []), "copydetect": ([], []), "rare lines": ([], [])}
        for assignment in ASSIGNMENTS:
            folder = work / _slug(kind) / assignment
            copies, sources = cohort(assignment, kind, folder)
            positive = {frozenset(c) for c in copies}
            rare: dict[frozenset[str], int] = {}
            for tool, found in (("ours", ours(assignment, folder, rare)), ("rare lines", rare),
                                ("copydetect", theirs(assignment, folder, work / "scripts" / _slug(kind) / assignment))):
                for pair, score in found.items():
                    a, b = sorted(pair)
                    if pair in positive:
                        scores[tool][0].append(score)
                    elif not sources[a] & sources[b]:
                        scores[tool][1].append(score)
        table[kind] = {tool: metrics(*s) for tool, s in scores.items()}
        table[kind]["pairs"] = [len(scores["ours"][0]), len(scores["ours"][1])]
        table[kind]["rare lines found"] = [sum(n > 0 for n in scores["rare lines"][0]),
                                           sum(n > 0 for n in scores["rare lines"][1])]
        print(_row(kind, table[kind]), flush=True)
        if kind == RARE:
            ranked = dict(table[kind], ours=table[kind]["rare lines"])
            print(_row(f"{kind}, ranked by lines only the pair shares", ranked), flush=True)
    return table


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _row(kind: str, row: dict) -> str:
    o, c = row["ours"], row["copydetect"]
    return (f"| {kind} | {row['pairs'][0]} / {row['pairs'][1]} | {o['auc']:.3f} | {o['precision_at_k']:.2f} | "
            f"{o['gap']:+.2f} | {'yes' if o['all_copies_above'] else 'no'} | {c['auc']:.3f} | "
            f"{c['precision_at_k']:.2f} | {c['gap']:+.2f} |")


def speed(work: Path, teams: int = 60, past: int = 1000) -> dict:
    """`autograder similarity` on `teams` hand-ins per assignment, with `past` earlier hand-ins over the four
    assignments (disguised implementations drawn at random), once with an empty index and once more."""
    from autograder.cli import main

    course_root = ROOT
    rng = random.Random(0)
    kinds = list(DISGUISES)
    for assignment in ASSIGNMENTS:
        release = load_course(course_root).get(assignment).release_dir / f"{assignment}.ipynb"
        graded = graded_names(release)
        impls = list(implementations(assignment).values())
        for folder, count in (("cohort", teams), ("past", past // len(ASSIGNMENTS))):
            target = work / "speed" / assignment / folder
            target.mkdir(parents=True)
            for t in range(count):
                code = disguise(rng.choice(impls), DISGUISES[rng.choice(kinds)], rng.randrange(2**32), set(graded))
                nbformat.write(notebook(release, code, graded), target / f"team_{t:03d}.ipynb")
    timings = {}
    for run in ("empty index", "index filled"):
        began, cpu = time.perf_counter(), _cpu()
        for assignment in ASSIGNMENTS:
            base = work / "speed" / assignment
            assert main(["--course-root", str(course_root), "similarity", assignment, str(base / "cohort"),
                         "--past", str(base / "past"), "--output", str(work / "speed_out"),
                         "--index", str(work / "speed_index.db")]) == 0
        timings[run] = {"wall_s": time.perf_counter() - began, "cpu_s": _cpu() - cpu, "load": os.getloadavg()[0]}
        print(f"{teams} teams x {len(ASSIGNMENTS)} assignments + {past} earlier hand-ins, {run}: "
              f"{timings[run]['wall_s']:.1f} s ({timings[run]['cpu_s']:.1f} s of CPU, load average "
              f"{timings[run]['load']:.1f})", flush=True)
    return timings


def _cpu() -> float:
    """CPU seconds of this process and the processes it waited for (the index is filled by several)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="also time 60 teams x 4 assignments + 1,000 past")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="similarity-bench-") as work:
        print("| disguise | copy / independent pairs | AUC | precision at k | gap P25-P75 | every copy above "
              "| copydetect AUC | copydetect precision at k | copydetect gap |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        figures = {"quality": quality(Path(work))}
        found = figures["quality"][RARE]["rare lines found"]
        clean = sum(row["rare lines found"][1] for row in figures["quality"].values())
        print(f"\nLines only the two share: in {found[0]} of {figures['quality'][RARE]['pairs'][0]} copy pairs that "
              f"kept a comment and a constant; in {clean} of "
              f"{sum(row['pairs'][1] for row in figures['quality'].values())} independent pairs, all cohorts.")
        if args.speed:
            figures["speed"] = speed(Path(work))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
