"""Replica choice: the healthy replica with the fewest requests in flight."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from streamgate.routing.replica import Replica

__all__ = ["LeastInFlightPicker"]


class LeastInFlightPicker:
    """Least in-flight among healthy replicas; ties rotate, so idle replicas share the load."""

    def __init__(self) -> None:
        self._turn = 0

    def pick(
        self, replicas: Sequence[Replica], exclude: Collection[Replica] = ()
    ) -> Replica | None:
        """The replica for the next attempt, or None when no healthy one is left."""
        candidates = [r for r in replicas if r.healthy and r not in exclude]
        if not candidates:
            return None
        self._turn = (self._turn + 1) % len(candidates)
        rotated = candidates[self._turn :] + candidates[: self._turn]
        # min() keeps the first of equals: the rotation decides ties.
        return min(rotated, key=lambda r: r.in_flight)
