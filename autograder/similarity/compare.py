"""Scores: every pair of this cohort, and one-way each team against past hand-ins and public code.

A fingerprint's weight is log((N + 1) / df), df the number of documents (this cohort and past years)
holding it: a fragment every team writes (`torch.round(x / scale)`) weighs little, one that two
teams share weighs much. Template fingerprints are gone before anything is counted, from the shared
part and from the whole alike.

Per function: similarity = 2 * shared / (weight of A's function + weight of B's), coverage = shared /
weight of one side's. Per notebook the same over all functions. A pair's score is the larger of its
notebook similarity and its most similar function's, the latter scaled down while fewer than
`CONFIDENT` fingerprints only the two share are (a short function alike in two teams tells little, and
less when others write it too).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from autograder.similarity.sources import Document, Template

CONFIDENT = 20  # shared fingerprints for a function's similarity to count in full
DETAILED = 40  # pairs shown side by side (and every outlier)
FENCE_IQR = 3.0  # Tukey's far-out fence: Q3 + 3 IQR
MIN_PAIRS_FOR_FENCE = 6


@dataclass
class Side:
    """A document with template removed: unit -> hash -> lines (first, last) it spans."""

    doc: Document
    units: dict[str, dict[int, list[tuple[int, int]]]]
    weight: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def total(self) -> float:
        return sum(self.weight.values())


@dataclass
class FunctionMatch:
    unit: str  # the unit of A; for public code `other` names the function it matches
    other: str
    similarity: float
    coverage: tuple[float, float | None]
    shared: int
    texts: tuple[str, str]
    marked: tuple[list[int], list[int]]  # lines of each text that shared fingerprints span


@dataclass
class Match:
    a: str
    b: str
    scope: str  # "cohort", "past" or "public"
    score: float
    similarity: float  # notebook level (for one-way scopes: coverage of A)
    coverage: tuple[float, float | None]
    best_unit: str
    functions: list[FunctionMatch] = field(default_factory=list)
    longest: tuple[str, str, int] | None = None  # (unit, text, lines) of the longest shared run of lines in A
    rare_lines: list[str] = field(default_factory=list)
    outlier: bool = False


@dataclass
class Result:
    pairs: list[Match]
    past: list[Match]
    public: list[Match]
    fence: float | None
    clusters: list[list[str]]
    scores: list[float]


class Weights:
    def __init__(self, docs: list[Document], template: Template):
        self.df: Counter = Counter()
        self.lines: Counter = Counter()
        for doc in docs:
            self.df.update({p.hash for part in doc.parts.values() for p in part.prints})
            self.lines.update(set(doc.lines) - template.lines)
        self.n = len(docs)
        self.confident = CONFIDENT * math.log((self.n + 1) / 2)  # the weight of CONFIDENT rare fingerprints

    def __call__(self, h: int) -> float:
        return math.log((self.n + 1) / max(1, self.df[h]))


def side(doc: Document, template: Template, weigh: Weights | None) -> Side:
    units: dict[str, dict[int, list[tuple[int, int]]]] = {}
    for unit, part in doc.parts.items():
        prints: dict[int, list[tuple[int, int]]] = {}
        for p in part.prints:
            if p.hash not in template.hashes:
                prints.setdefault(p.hash, []).append((p.first, p.last))
        units[unit] = prints
    s = Side(doc, units)
    if weigh is not None:
        s.weight = {u: sum(weigh(h) for h in prints) for u, prints in units.items()}
    return s


def compare_all(cohort: list[Document], past: list[Document], public: list[Document], template: Template) -> Result:
    weigh = Weights(cohort + past, template)
    teams = [side(d, template, weigh) for d in cohort]
    olds = [side(d, template, weigh) for d in past]
    pairs = [_score(a, b, weigh, "cohort") for i, a in enumerate(teams) for b in teams[i + 1:]]
    pairs.sort(key=lambda m: (-m.score, m.a, m.b))
    scores = [m.score for m in pairs]
    fence = outlier_fence(scores)
    past_matches = sorted((_score(a, b, weigh, "past") for a in teams for b in olds), key=lambda m: -m.score)
    public_sides = [side(d, template, None) for d in public]
    public_matches = sorted((m for a in teams for b in public_sides for m in [_public(a, b, weigh)] if m),
                            key=lambda m: -m.score)
    for match in pairs + past_matches + public_matches:
        match.outlier = fence is not None and match.score > fence
    by_name = {s.name: s for s in teams + olds + public_sides}
    for chosen in (_shown(pairs), _shown(past_matches), _shown(public_matches)):
        for match in chosen:
            _details(match, by_name[match.a], by_name[match.b], weigh)
    return Result(pairs, _shown(past_matches), _shown(public_matches), fence, clusters(pairs), scores)


def _shown(matches: list[Match]) -> list[Match]:
    return [m for i, m in enumerate(matches) if i < DETAILED or m.outlier]


def outlier_fence(scores: list[float]) -> float | None:
    """Tukey's far-out fence over the cohort's pair scores; None for too few pairs to say."""
    if len(scores) < MIN_PAIRS_FOR_FENCE:
        return None
    ordered = sorted(scores)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    return q3 + FENCE_IQR * (q3 - q1)


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _score(a: Side, b: Side, weigh: Weights, scope: str) -> Match:
    shared_total, best, best_unit = 0.0, 0.0, ""
    for unit, prints in a.units.items():
        other = b.units.get(unit)
        if not other or not prints:
            continue
        common = prints.keys() & other.keys()
        if not common:
            continue
        shared = sum(weigh(h) for h in common)
        shared_total += shared
        if scope == "cohort":
            value = 2 * shared / (a.weight[unit] + b.weight[unit])
        else:
            value = shared / a.weight[unit]
        value *= min(1.0, shared / weigh.confident)
        if value > best:
            best, best_unit = value, unit
    cover_a = shared_total / a.total if a.total else 0.0
    cover_b = shared_total / b.total if b.total else 0.0
    if scope == "cohort":
        overall = 2 * shared_total / (a.total + b.total) if a.total + b.total else 0.0
        coverage = (cover_a, cover_b)
    else:
        overall, coverage = cover_a, (cover_a, None)
    return Match(a.name, b.name, scope, max(overall, best), overall, coverage, best_unit)


def _public(a: Side, b: Side, weigh: Weights) -> Match | None:
    """One team against one public file: each of the team's functions against all of the file's."""
    everything: dict[int, str] = {}
    for unit, prints in b.units.items():
        for h in prints:
            everything.setdefault(h, unit)
    shared_total, best, best_unit = 0.0, 0.0, ""
    for unit, prints in a.units.items():
        common = prints.keys() & everything.keys()
        if not common:
            continue
        shared = sum(weigh(h) for h in common)
        shared_total += shared
        value = shared / a.weight[unit] * min(1.0, shared / weigh.confident)
        if value > best:
            best, best_unit = value, unit
    if not shared_total:
        return None
    cover = shared_total / a.total if a.total else 0.0
    return Match(a.name, b.name, "public", max(cover, best), cover, (cover, None), best_unit)


def _details(match: Match, a: Side, b: Side, weigh: Weights) -> None:
    """Side by side per function, the longest shared run of lines and the shared rare lines."""
    functions = []
    for unit, prints in a.units.items():
        if match.scope == "public":
            other = max(b.units, key=lambda v: len(prints.keys() & b.units[v].keys()), default=None)
        else:
            other = unit if unit in b.units else None
        if other is None:
            continue
        theirs = b.units[other]
        common = prints.keys() & theirs.keys()
        if not common:
            continue
        shared = sum(weigh(h) for h in common)
        b_weight = sum(weigh(h) for h in theirs)
        a_cover = shared / a.weight[unit] if a.weight[unit] else 0.0
        b_cover = shared / b_weight if b_weight else 0.0
        similarity = 2 * shared / (a.weight[unit] + b_weight) if a.weight[unit] + b_weight else 0.0
        functions.append(FunctionMatch(
            unit, other, similarity, (a_cover, None if match.scope == "public" else b_cover), len(common),
            (a.doc.parts[unit].text, b.doc.parts[other].text),
            (_lines(prints, common), _lines(theirs, common))))
    functions.sort(key=lambda f: -f.similarity)
    match.functions = functions
    runs = [(unit, run) for f in functions for unit, run in [(f.unit, r) for r in _runs(f.marked[0])]]
    if runs:
        unit, run = max(runs, key=lambda r: (len(r[1]), r[0]))
        lines = a.doc.parts[unit].text.splitlines()
        match.longest = (unit, "\n".join(lines[i - 1] for i in run if i - 1 < len(lines)), len(run))
    match.rare_lines = sorted(line for line in set(a.doc.lines) & set(b.doc.lines) if 0 < weigh.lines[line] <= 2)


def _lines(prints: dict[int, list[tuple[int, int]]], common: set[int]) -> list[int]:
    return sorted({line for h in common for first, last in prints[h] for line in range(first, last + 1)})


def _runs(lines: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for line in lines:
        if runs and line == runs[-1][-1] + 1:
            runs[-1].append(line)
        else:
            runs.append([line])
    return runs


def clusters(pairs: list[Match]) -> list[list[str]]:
    """Teams linked by outlier pairs, each group sorted, the largest first."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for match in pairs:
        if match.outlier:
            parent[root(match.a)] = root(match.b)
    groups: dict[str, list[str]] = {}
    for team in parent:
        groups.setdefault(root(team), []).append(team)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))
