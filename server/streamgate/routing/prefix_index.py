"""Which replica has seen which prompt prefixes: per replica, an LRU-bounded set of block hashes.

Updated when a request is routed (the replica will have its prefix in its KV cache soon after),
read to find the replica with the longest matching prefix. Memory is bounded: at most
`capacity` hashes per replica, the least recently used forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["PrefixIndex"]


class PrefixIndex:
    """See the module doc; replicas are named by any hashable key (their name)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: dict[str, OrderedDict[int, None]] = {}

    def match(self, replica: str, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` the replica has seen."""
        seen = self._blocks.get(replica)
        if not seen:
            return 0
        n = 0
        for h in hashes:
            if h not in seen:
                break
            n += 1
        return n

    def record(self, replica: str, hashes: Sequence[int]) -> None:
        """The replica is about to cache these blocks: remember them as the most recent."""
        seen = self._blocks.setdefault(replica, OrderedDict())
        for h in hashes:
            if h in seen:
                seen.move_to_end(h)
            else:
                seen[h] = None
        while len(seen) > self.capacity:
            seen.popitem(last=False)

    def size(self, replica: str) -> int:
        """Hashes remembered for the replica."""
        return len(self._blocks.get(replica, ()))

    def forget(self, replica: str) -> None:
        """Drop everything known of the replica (it restarted: its cache is empty)."""
        self._blocks.pop(replica, None)
