"""Sticky weighted splits (canary, A/B): weighted rendezvous hashing.

Each arm scores `-weight / ln(u)`, where `u` in (0, 1) is a hash of (key, arm); the highest
score wins. The same key always lands in the same arm, each arm gets its weight's share of
keys, and changing one weight moves only the keys that must move (about the weight moved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import xxhash

__all__ = ["choose_arm"]

_SCALE = float(2**64)


def choose_arm(key: str, arms: Sequence[tuple[str, float]]) -> int:
    """The index of the arm (name, weight > 0) that `key` lands in."""
    best, best_score = 0, -math.inf
    for i, (name, weight) in enumerate(arms):
        h = xxhash.xxh64_intdigest(f"{name}\0{key}".encode())
        u = (h + 0.5) / _SCALE  # in (0, 1)
        score = -weight / math.log(u)
        if score > best_score:
            best, best_score = i, score
    return best
