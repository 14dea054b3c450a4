"""The in-process cache tier: LRU (lru-dict) bounded by entries and bytes, with a TTL per entry."""

from __future__ import annotations

import time
from collections.abc import Callable

from lru import LRU

from streamgate.cache.entry import CachedResponse

__all__ = ["LocalCache"]


class LocalCache:
    """See the module doc. `on_evict` is told of every entry dropped to make room."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._on_evict = on_evict
        self._entries: LRU[bytes, tuple[float, CachedResponse]] = LRU(
            max_entries, callback=self._evicted
        )
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedResponse | None:
        """The live entry of `key` (an expired one is dropped)."""
        item = self._entries.get(key)
        if item is None:
            return None
        expires, response = item
        if self._clock() >= expires:
            self._drop(key)
            return None
        return response

    def put(self, key: bytes, response: CachedResponse, ttl: float) -> None:
        """Store `response` for `ttl` seconds (replacing an older entry of the key)."""
        if response.size > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self._clock() + ttl, response)
        self.bytes += response.size
        while self.bytes > self.max_bytes and len(self._entries):
            _, (_, old) = self._entries.popitem(least_recent=True)
            self.bytes -= old.size
            self._count_eviction()

    def invalidate(self, key: bytes) -> bool:
        """Drop the entry of `key`; True if there was one."""
        return self._drop(key)

    def invalidate_where(self, matches: Callable[[CachedResponse], bool]) -> int:
        """Drop every entry for which `matches` holds; how many."""
        keys = [key for key, (_, response) in self._entries.items() if matches(response)]
        for key in keys:
            self._drop(key)
        return len(keys)

    def clear(self) -> int:
        """Drop everything; how many entries there were."""
        n = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return n

    def _drop(self, key: bytes) -> bool:
        item = self._entries.pop(key, None)
        if item is None:
            return False
        self.bytes -= item[1].size
        return True

    def _evicted(self, key: bytes, item: tuple[float, CachedResponse]) -> None:
        # Called by lru-dict when the entry count is over its size.
        self.bytes -= item[1].size
        self._count_eviction()

    def _count_eviction(self) -> None:
        self.evictions += 1
        if self._on_evict is not None:
            self._on_evict()
