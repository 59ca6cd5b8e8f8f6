"""Winnowed k-gram fingerprints of token streams (Schleimer, Wilkerson and Aiken, SIGMOD 2003).

Every run of K tokens is hashed; in every window of W consecutive hashes the smallest is kept, so
any shared run of K + W - 1 tokens or more is found, whatever else surrounds it. Hashes are stable
across runs (token ids from BLAKE2, k-grams by Python's tuple hash of ints), so an index written
today is read tomorrow; `VERSION` names everything that changes them.
"""

from __future__ import annotations

import hashlib
import sys
from typing import NamedTuple

K = 6  # tokens per k-gram: `torch.round ( Div N N )` is five
W = 4  # a shared run of K + W - 1 = 9 tokens is always found
VERSION = f"tokens-3/k{K}/w{W}/py{sys.version_info.major}.{sys.version_info.minor}"

_ids: dict[str, int] = {}


class Print(NamedTuple):
    """One kept k-gram: its hash and the lines (first, last) of the unit's text it spans."""

    hash: int
    first: int
    last: int


def _token_id(token: str) -> int:
    found = _ids.get(token)
    if found is None:
        found = _ids[token] = int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"),
                                                             digest_size=8).digest(), "little", signed=True)
    return found


def kgrams(tokens: list[str]) -> list[int]:
    """The hash of every run of K tokens (one for a stream shorter than K)."""
    ids = [_token_id(t) for t in tokens]
    if not ids:
        return []
    if len(ids) < K:
        return [hash(tuple(ids))]
    return [hash(tuple(ids[i:i + K])) for i in range(len(ids) - K + 1)]


def winnow(tokens: list[str], lines: list[int]) -> list[Print]:
    """The fingerprints of one unit: the smallest k-gram hash of each window (the rightmost of equals),
    each kept once per position."""
    hashes = kgrams(tokens)
    if not hashes:
        return []
    span = min(K, len(tokens))
    picked: list[int] = []
    for start in range(max(1, len(hashes) - W + 1)):
        window = hashes[start:start + W]
        position = start + len(window) - 1 - window[::-1].index(min(window))  # the rightmost smallest
        if not picked or picked[-1] != position:
            picked.append(position)
    return [Print(hashes[p], min(lines[p:p + span]), max(lines[p:p + span])) for p in picked]
