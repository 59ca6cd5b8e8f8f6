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
DETAILED = 40  # matches per scope shown side by side, the highest first (the rest: scores in CSV and JSON)
FENCE_IQR = 3.0  # Tukey's far-out fence: Q3 + 3 IQR
FLOOR = 0.5  # no pair below this is an outlier, however alike the rest of the cohort is
MIN_PAIRS_FOR_FENCE = 6


@dataclass
class Side:
    """A document with template removed: unit -> its fingerprints' hashes, and the weight of each unit."""

    doc: Document
    units: dict[str, set[int]]
    weight: dict[str, float]

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def total(self) -> float:
        return sum(self.weight.values())

    def spans(self, unit: str) -> dict[int, list[tuple[int, int]]]:
        """Hash -> the lines (first, last) of the unit's text each fingerprint spans."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for p in self.doc.parts[unit].prints:
            if p.hash in self.units[unit]:
                spans.setdefault(p.hash, []).append((p.first, p.last))
        return spans


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
    pairs: list[Match]  # every pair of the cohort, the highest first
    past: list[Match]  # every team and earlier hand-in that share anything, the highest first
    public: list[Match]
    fence: float | None
    clusters: list[list[str]]
    scores: list[float]


class Weights:
    """The weight of each fingerprint, computed once: this is what every comparison adds up."""

    def __init__(self, docs: list[Document], template: Template):
        df: Counter = Counter()
        self.lines: Counter = Counter()
        for doc in docs:
            df.update({p.hash for part in doc.parts.values() for p in part.prints})
            self.lines.update(set(doc.lines) - template.lines)
        self.n = len(docs)
        self.of = {h: math.log((self.n + 1) / count) for h, count in df.items()}
        self.unseen = math.log(self.n + 1)  # a fingerprint only public code holds
        self.confident = CONFIDENT * math.log((self.n + 1) / 2)  # the weight of CONFIDENT rare fingerprints

    def __call__(self, h: int) -> float:
        return self.of.get(h, self.unseen)

    def total(self, hashes) -> float:
        return sum(map(self, hashes))


def side(doc: Document, template: Template, weigh: Weights) -> Side:
    units = {unit: {p.hash for p in part.prints} - template.hashes for unit, part in doc.parts.items()}
    return Side(doc, units, {u: weigh.total(hashes) for u, hashes in units.items()})


def shared_weights(queries: list[Side], targets: list[Side], weigh: Weights, *, pairwise: bool = False,
                   any_unit: bool = False) -> dict[tuple[int, int], dict[str, float]]:
    """(query, target) -> unit of the query -> weight of the fingerprints both hold, for every pair that
    shares any. An inverted index (hash -> targets holding it) visits only targets that share a
    fingerprint, so 1,000 earlier hand-ins cost what their shared fingerprints cost, not 1,000 comparisons.
    `pairwise`: queries and targets are one list, each pair once; `any_unit`: a query's function is
    matched with every function of the target (public code names its functions as it likes)."""
    postings: dict[str, dict[int, list[int]]] = {}
    for j, target in enumerate(targets):
        for unit, hashes in target.units.items():
            key = "" if any_unit else unit
            for h in hashes:
                found = postings.setdefault(key, {}).setdefault(h, [])
                if not found or found[-1] != j:
                    found.append(j)
    out: dict[tuple[int, int], dict[str, float]] = {}
    for i, query in enumerate(queries):
        for unit, hashes in query.units.items():
            index = postings.get("" if any_unit else unit)
            if not index:
                continue
            acc: dict[int, float] = {}
            for h in hashes:
                found = index.get(h)
                if found:
                    w = weigh(h)
                    for j in found:
                        acc[j] = acc.get(j, 0.0) + w
            for j, value in acc.items():
                if not pairwise or j > i:
                    out.setdefault((i, j), {})[unit] = value
    return out


def compare_all(cohort: list[Document], past: list[Document], public: list[Document], template: Template) -> Result:
    weigh = Weights(cohort + past, template)
    teams = [side(d, template, weigh) for d in cohort]
    olds = [side(d, template, weigh) for d in past]
    publics = [side(d, template, weigh) for d in public]
    shared = shared_weights(teams, teams, weigh, pairwise=True)
    pairs = [_score(a, b, shared.get((i, i + 1 + k), {}), weigh, "cohort")
             for i, a in enumerate(teams) for k, b in enumerate(teams[i + 1:])]
    pairs.sort(key=lambda m: (-m.score, m.a, m.b))
    scores = [m.score for m in pairs]
    fence = outlier_fence(scores)
    past_matches = sorted((_score(teams[i], olds[j], units, weigh, "past")
                           for (i, j), units in shared_weights(teams, olds, weigh).items()),
                          key=lambda m: (-m.score, m.a, m.b))
    public_matches = sorted((_score(teams[i], publics[j], units, weigh, "public")
                             for (i, j), units in shared_weights(teams, publics, weigh, any_unit=True).items()),
                            key=lambda m: (-m.score, m.a, m.b))
    rare = rare_lines(cohort + past, weigh)
    for match in pairs + past_matches + public_matches:
        match.outlier = fence is not None and match.score > fence
        match.rare_lines = rare.get((match.a, match.b), [])
    by_name = {s.name: s for s in teams + olds + publics}
    for matches in (pairs, past_matches, public_matches):
        for match in matches[:DETAILED]:
            _details(match, by_name[match.a], by_name[match.b], weigh)
    return Result(pairs, past_matches, public_matches, fence, clusters(pairs), scores)


def outlier_fence(scores: list[float]) -> float | None:
    """Tukey's far-out fence over the cohort's pair scores, never below `FLOOR`: in a cohort where most pairs
    share nothing the quartiles are 0, and the fence alone would flag any shared line. None for too few
    pairs to say."""
    if len(scores) < MIN_PAIRS_FOR_FENCE:
        return None
    ordered = sorted(scores)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    return max(FLOOR, q3 + FENCE_IQR * (q3 - q1))


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _score(a: Side, b: Side, shared: dict[str, float], weigh: Weights, scope: str) -> Match:
    """A pair's score from the weight each unit of A shares with B (with B's same unit; for public code
    with any of B's)."""
    best, best_unit = 0.0, ""
    for unit in a.units:
        value = shared.get(unit)
        if not value:
            continue
        if scope == "cohort":
            value = 2 * value / (a.weight[unit] + b.weight[unit]) * min(1.0, value / weigh.confident)
        else:
            value = value / a.weight[unit] * min(1.0, value / weigh.confident)
        if value > best:
            best, best_unit = value, unit
    shared_total = sum(shared.values())
    cover_a = shared_total / a.total if a.total else 0.0
    if scope == "cohort":
        overall = 2 * shared_total / (a.total + b.total) if a.total + b.total else 0.0
        coverage = (cover_a, shared_total / b.total if b.total else 0.0)
    else:
        overall, coverage = cover_a, (cover_a, None)
    return Match(a.name, b.name, scope, max(overall, best), overall, coverage, best_unit)


def _details(match: Match, a: Side, b: Side, weigh: Weights) -> None:
    """Side by side per function, the longest shared run of lines and the shared rare lines."""
    functions = []
    for unit, hashes in a.units.items():
        if match.scope == "public":
            other = max(b.units, key=lambda v: len(hashes & b.units[v]), default=None)
        else:
            other = unit if unit in b.units else None
        if other is None:
            continue
        common = hashes & b.units[other]
        if not common:
            continue
        shared = weigh.total(common)
        b_weight = b.weight[other]
        a_cover = shared / a.weight[unit] if a.weight[unit] else 0.0
        b_cover = shared / b_weight if b_weight else 0.0
        similarity = 2 * shared / (a.weight[unit] + b_weight) if a.weight[unit] + b_weight else 0.0
        functions.append(FunctionMatch(
            unit, other, similarity, (a_cover, None if match.scope == "public" else b_cover), len(common),
            (a.doc.parts[unit].text, b.doc.parts[other].text),
            (_lines(a.spans(unit), common), _lines(b.spans(other), common))))
    functions.sort(key=lambda f: -f.similarity)
    match.functions = functions
    runs = [(unit, run) for f in functions for unit, run in [(f.unit, r) for r in _runs(f.marked[0])]]
    if runs:
        unit, run = max(runs, key=lambda r: (len(r[1]), r[0]))
        lines = a.doc.parts[unit].text.splitlines()
        match.longest = (unit, "\n".join(lines[i - 1] for i in run if i - 1 < len(lines)), len(run))
    if match.scope == "public":
        match.rare_lines = sorted(line for line in set(a.doc.lines) & set(b.doc.lines) if 0 < weigh.lines[line] <= 2)


def rare_lines(docs: list[Document], weigh: Weights) -> dict[tuple[str, str], list[str]]:
    """(document, document) -> the lines (template aside) only these two hold, both ways round: a comment,
    a typo or an odd constant two teams share is rare evidence that disguises seldom touch all of."""
    holders: dict[str, list[str]] = {}
    for doc in docs:
        for line in doc.lines:
            if weigh.lines[line] == 2:
                holders.setdefault(line, []).append(doc.name)
    out: dict[tuple[str, str], list[str]] = {}
    for line, (a, b) in sorted(holders.items()):
        out.setdefault((a, b), []).append(line)
        out.setdefault((b, a), []).append(line)
    return out


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
