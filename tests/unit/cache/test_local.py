"""The in-process tier: entries expire, and the tier is bounded by entries and by bytes."""

from __future__ import annotations

from streamgate.cache import LocalCache
from support.events import cached_response as response


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_are_bounded_by_count_and_bytes() -> None:
    clock = Clock()
    evicted: list[int] = []
    cache = LocalCache(2, 10_000, clock=clock, on_evict=lambda: evicted.append(1))
    cache.put(b"a", response(1), ttl=10)
    assert cache.get(b"a") is not None
    clock.now = 10.0
    assert cache.get(b"a") is None and len(cache) == 0 and cache.bytes == 0
    for key in (b"1", b"2", b"3"):
        cache.put(key, response(1), ttl=100)
    assert len(cache) == 2 and cache.get(b"1") is None and len(evicted) == 1
    big = response(50, "y" * 100)  # about 8 KB
    cache.put(b"big", big, ttl=100)
    assert cache.bytes <= cache.max_bytes and cache.get(b"big") is big
    cache.put(b"huge", response(500, "z" * 100), ttl=100)  # larger than the whole cache
    assert cache.get(b"huge") is None
    entries = len(cache)
    assert cache.clear() == entries and len(cache) == 0 and cache.bytes == 0


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    cache = LocalCache(10, 100_000)
    cache.put(b"k", response(3), ttl=100)
    once = cache.bytes
    cache.put(b"k", response(3), ttl=100)
    assert (len(cache), cache.bytes) == (1, once)
    assert cache.invalidate(b"k") and not cache.invalidate(b"k")
    assert cache.bytes == 0
