"""Replica pickers: which healthy replica of a pool serves the next request.

- `round_robin`: in turn.
- `least_load`: the smallest `Replica.load()`; ties in turn.
- `power_of_two`: the less loaded of two replicas drawn at random.
- `prefix_affinity`: the replica that has seen the longest prefix of the prompt (its KV cache
  likely holds it), unless the pool is imbalanced; on a miss, the least loaded. The guard is
  SGLang's cache-aware router's: the pool is imbalanced when the most and least loaded replicas
  differ by more than `balance_abs` requests *and* by more than `balance_rel` times.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from streamgate.routing.prefix_index import PrefixIndex
from streamgate.routing.replica import Replica

__all__ = [
    "LeastLoad",
    "PickRequest",
    "Picker",
    "PickerName",
    "PowerOfTwo",
    "PrefixAffinity",
    "RoundRobin",
]

PickerName = Literal["round_robin", "least_load", "power_of_two", "prefix_affinity"]


@dataclass(frozen=True)
class PickRequest:
    """What pickers may look at in a request."""

    hashes: Sequence[int] = field(default=())
    """Prefix block hashes of the prompt (routing.prefix)."""


class Picker(Protocol):
    """Chooses among `candidates` (healthy, not yet tried; never empty)."""

    def pick(self, candidates: Sequence[Replica], request: PickRequest) -> Replica: ...


class RoundRobin:
    """Each replica in turn."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Replica], request: PickRequest) -> Replica:
        self._turn += 1
        return candidates[self._turn % len(candidates)]


class LeastLoad:
    """The least loaded replica; ties rotate, so idle replicas share the work."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Replica], request: PickRequest) -> Replica:
        self._turn = (self._turn + 1) % len(candidates)
        rotated = [*candidates[self._turn :], *candidates[: self._turn]]
        return min(rotated, key=lambda r: r.load())  # min() keeps the first of equals


class PowerOfTwo:
    """The less loaded of two random replicas: near least-load without a global scan, and no
    herd onto one replica when loads are stale."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Replica], request: PickRequest) -> Replica:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self._rng.sample(list(candidates), 2)
        return a if a.load() <= b.load() else b


class PrefixAffinity:
    """See the module doc. `index` is shared by the pool's replicas; `min_match` is the share of
    the prompt's blocks a replica must have seen to win on affinity."""

    def __init__(
        self,
        index: PrefixIndex,
        *,
        balance_abs: float = 32,
        balance_rel: float = 1.5,
        min_match: float = 0.3,
    ) -> None:
        self.index = index
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel
        self.min_match = min_match
        self._fallback = LeastLoad()

    def pick(self, candidates: Sequence[Replica], request: PickRequest) -> Replica:
        chosen = self._choose(candidates, request.hashes)
        self.index.record(chosen.name, request.hashes)
        return chosen

    def imbalanced(self, candidates: Sequence[Replica]) -> bool:
        """The loads differ too much for affinity to win."""
        loads = [r.load() for r in candidates]
        low, high = min(loads), max(loads)
        return high - low > self.balance_abs and high > self.balance_rel * low

    def _choose(self, candidates: Sequence[Replica], hashes: Sequence[int]) -> Replica:
        if not hashes or self.imbalanced(candidates):
            return self._fallback.pick(candidates, PickRequest())
        matches = [(self.index.match(r.name, hashes), -r.load(), r) for r in candidates]
        best, _, replica = max(matches, key=lambda m: (m[0], m[1]))
        if best >= max(1, self.min_match * len(hashes)):
            return replica
        return self._fallback.pick(candidates, PickRequest())  # a miss: spread by load
