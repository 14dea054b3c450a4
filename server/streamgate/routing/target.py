"""Where a route's (or a rule's) requests go: a pool or a sticky split, a fallback, a shadow."""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.routing.pool import Pool
from streamgate.routing.replica import Replica
from streamgate.routing.split import choose_arm

__all__ = ["Target"]


@dataclass(frozen=True, eq=False)
class Target:
    """`arms`: (pool, weight) — one arm is a plain pool. `fallback`: used when the chosen pool
    has no available replica. `shadow`: gets a copy of each request, its output discarded."""

    arms: tuple[tuple[Pool, float], ...]
    fallback: Pool | None = None
    shadow: Pool | None = None

    def choose(self, key: str) -> Pool:
        """The pool for a request whose sticky key (user, else request) is `key`."""
        if len(self.arms) == 1:
            pool = self.arms[0][0]
        else:
            pool = self.arms[choose_arm(key, [(p.name, w) for p, w in self.arms])][0]
        if self.fallback is not None and not pool.has_alternative(()):
            return self.fallback
        return pool

    def replicas(self) -> tuple[Replica, ...]:
        """Every replica that may serve its requests (arms and fallback), once each."""
        pools = [p for p, _ in self.arms] + ([self.fallback] if self.fallback else [])
        seen: dict[int, Replica] = {}
        for pool in pools:
            for r in pool.replicas:
                seen.setdefault(id(r), r)
        return tuple(seen.values())
