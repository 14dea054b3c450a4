"""The shared cache tier against a real redis-server: storage, invalidation, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from streamgate.backends import StreamDetails, StreamEvent, Token
from streamgate.cache import (
    CachedResponse,
    LocalCache,
    RedisTier,
    SharedTierUnavailable,
    TieredCache,
)
from streamgate.config import RedisConfig
from support.processes import free_port
from support.redis_server import RedisServer

TIMEOUT = 0.5


def entry(scope: str, text: str = "hi") -> CachedResponse:
    events = (
        StreamEvent(0, Token(1, text, -0.1, False)),
        StreamEvent(1, Token(2, "!", -0.2, False), generated_text=text + "!",
                    details=StreamDetails("length", 2, 3, None)),
    )  # fmt: skip
    return CachedResponse(events, scope, "m@1", "b", "p", 3, None)


def key(n: int) -> bytes:
    return n.to_bytes(16, "big")


Observed = list[tuple[str, float | None]]


def tier(url: str, observed: Observed, prefix: str = "test:") -> RedisTier:
    config = RedisConfig(
        url=url, timeout_seconds=TIMEOUT, admin_timeout_seconds=5.0, reconnect_seconds=0.1,
        max_connections=8, key_prefix=prefix,
    )  # fmt: skip
    return RedisTier(config, observe=lambda op, seconds: observed.append((op, seconds)))


@pytest.fixture
async def shared(redis: RedisServer) -> AsyncIterator[Callable[..., RedisTier]]:
    made: list[RedisTier] = []

    def make(prefix: str = "test:", observed: Observed | None = None) -> RedisTier:
        t = tier(redis.url, observed if observed is not None else [], prefix)
        made.append(t)
        return t

    yield make
    for t in made:
        await t.close()
    redis.command("FLUSHALL")


async def test_an_entry_is_shared_with_its_remaining_lifetime(
    shared: Callable[..., RedisTier], redis: RedisServer
) -> None:
    writer, reader = shared(), shared()
    await writer.start()
    await reader.start()
    assert writer.state == reader.state == "up"
    writer.put(key(1), entry("tenant:a"), ttl=60)
    await writer.flush()
    found = await reader.get(key(1))
    assert found is not None
    response, ttl = found
    assert response == entry("tenant:a") and 55 < ttl <= 60
    assert await reader.get(key(2)) is None
    assert redis.command("TTL", "test:s:tenant:a") != "-1"  # the scope index expires too


async def test_a_hit_in_redis_fills_the_local_tier(shared: Callable[..., RedisTier]) -> None:
    writer = shared()
    await writer.start()
    writer.put(key(1), entry("tenant:a"), ttl=60)
    await writer.flush()
    reader = shared()
    await reader.start()
    cache = TieredCache(LocalCache(100, 1 << 20), reader)
    first = await cache.get(key(1))
    assert (first.tier, first.response) == ("redis", entry("tenant:a"))
    second = await cache.get(key(1))
    assert (second.tier, second.response) == ("local", entry("tenant:a"))


async def test_invalidation_by_key_scope_and_all(
    shared: Callable[..., RedisTier], redis: RedisServer
) -> None:
    t, other_fleet = shared(), shared(prefix="other:")
    await t.start()
    await other_fleet.start()
    scopes = ["tenant:a", "tenant:a/x", "tenant:a/x/y", "tenant:ab", "tenant:b", "odd*[ns]?"]
    for n, scope in enumerate(scopes):
        t.put(key(n), entry(scope), ttl=60)
    other_fleet.put(key(99), entry("tenant:a"), ttl=60)
    await t.flush()
    await other_fleet.flush()
    # A namespace takes its nested scopes, not a sibling that merely shares the prefix.
    assert await t.invalidate_scope("tenant:a") == 3
    assert [await t.get(key(n)) is None for n in range(len(scopes))] == [
        True, True, True, False, False, False,
    ]  # fmt: skip
    assert await t.invalidate_scope("odd*[ns]?") == 1  # glob characters are literal
    assert await t.invalidate(key(3)) == 1 and await t.invalidate(key(3)) == 0
    assert await t.clear() == 1  # tenant:b's entry; indexes are not counted
    assert redis.command("KEYS", "test:*") == ""
    assert await other_fleet.get(key(99)) is not None  # another prefix is left alone


async def test_an_outage_is_skipped_within_the_timeout_and_the_tier_comes_back(
    shared: Callable[..., RedisTier], redis: RedisServer
) -> None:
    observed: Observed = []
    t = shared(observed=observed)
    await t.start()
    redis.stop()
    try:
        # The first lookup finds the connection gone: a miss, and the tier is down.
        assert await t.get(key(1)) is None
        assert t.state == "down" and t.errors >= 1
        assert ("get", None) in observed
        # While down: misses and skipped writes, without touching the network.
        calls = len(observed)
        assert await t.get(key(1)) is None
        t.put(key(1), entry("tenant:a"), ttl=60)
        await t.flush()
        assert len([o for o in observed[calls:] if o[0] != "ping"]) == 0
        with pytest.raises(SharedTierUnavailable):
            await t.clear()
    finally:
        redis.start()
    for _ in range(100):  # reconnect pings every 0.1 s
        if t.state == "up":
            break
        await asyncio.sleep(0.1)
    assert t.state == "up"
    t.put(key(1), entry("tenant:a"), ttl=60)
    await t.flush()
    assert await t.get(key(1)) is not None


async def test_a_slow_redis_costs_at_most_the_timeout(
    shared: Callable[..., RedisTier], redis: RedisServer
) -> None:
    t = shared()
    await t.start()
    t.put(key(1), entry("tenant:a"), ttl=60)
    await t.flush()
    redis.command("CLIENT", "PAUSE", "3000", "ALL")  # Redis answers nobody for 3 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await t.get(key(1)) is None
    # Ended by the tier's own bound, long before Redis answers again.
    assert loop.time() - started < 2.0
    assert t.state == "down"


async def test_a_redis_that_is_down_at_start_is_not_fatal(
    shared: Callable[..., RedisTier],
) -> None:
    t = tier(f"redis://127.0.0.1:{free_port()}/0", [])
    try:
        await t.start()
        assert t.state == "down"
        assert await t.get(key(1)) is None
    finally:
        await t.close()


async def test_an_answer_stored_while_redis_was_asked_is_found(
    shared: Callable[..., RedisTier], redis: RedisServer
) -> None:
    t = shared()
    await t.start()
    cache = TieredCache(LocalCache(100, 1 << 20), t)
    redis.command("CLIENT", "PAUSE", "100", "ALL")  # the lookup waits, within its bound
    lookup = asyncio.create_task(cache.get(key(1)))
    await asyncio.sleep(0.02)
    cache.local.put(key(1), entry("tenant:a"), ttl=60)  # an identical generation ends
    found = await lookup
    assert (found.tier, found.response) == ("local", entry("tenant:a"))
    assert t.state == "up"
