"""The shared cache tier in Redis: what one gateway stores, every gateway of the fleet can replay.

Keys (all under the configured prefix):
- `e:<key hex>`: an entry (cache/codec.py), with the entry's TTL;
- `s:<scope>`: the set of entry keys stored under a scope, so that a namespace or a tenant can
  be invalidated without a scan of every entry. It lives as long as its longest entry.

Redis must never fail a request nor slow it beyond `timeout` seconds: every operation runs
under that bound, and the first error or timeout marks the tier down. While it is down, lookups
miss and writes are skipped at once, and a background ping every `reconnect_seconds` brings it
back up. Faults are logged once per outage and counted by `observe`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streamgate.cache.codec import decode, encode
from streamgate.cache.entry import CachedResponse
from streamgate.config import RedisConfig
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.logging import get_logger

__all__ = ["RedisTier", "SharedTierUnavailable", "TierState"]

log = get_logger(__name__)

_T = TypeVar("_T")

TierState = Literal["connecting", "up", "down"]

Observe = Callable[[str, "float | None"], None]
"""Told of every operation: its name and duration in seconds, or None when it failed."""

_FAULTS = (RedisError, OSError, TimeoutError)
_BATCH = 500  # keys per UNLINK / SCAN page in invalidations


class SharedTierUnavailable(Exception):
    """An invalidation could not reach Redis (the local tier was invalidated regardless)."""


class RedisTier:
    """See the module doc (its settings: `config`, the `cache.redis` section). `start` before
    use, `close` at the end."""

    def __init__(self, config: RedisConfig, *, observe: Observe | None = None) -> None:
        self.state: TierState = "connecting"
        self.errors = 0
        timeout = config.timeout_seconds
        self._timeout = timeout
        self._admin_timeout = config.admin_timeout_seconds
        self._reconnect_seconds = config.reconnect_seconds
        self._prefix = config.key_prefix
        self._observe = observe
        # No retries inside redis-py: the tier's own bound and reconnect loop decide.
        pool = BlockingConnectionPool.from_url(
            config.url,
            max_connections=config.max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._client = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._reconnect: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect (a Redis that is down is not fatal: the tier starts down and reconnects)."""
        await self._try("ping", self._ping, self._timeout)

    async def close(self) -> None:
        """Stop reconnecting, let pending writes finish (each is bounded), disconnect."""
        if self._reconnect is not None:
            await cancel_and_wait({self._reconnect})
        await self.flush()
        await self._client.aclose()
        await self._client.connection_pool.disconnect()

    async def flush(self) -> None:
        """Wait for the writes under way (each is bounded by the timeout)."""
        if self._writes:
            await asyncio.wait(set(self._writes))

    # ---- the request path --------------------------------------------------------------------

    async def get(self, key: bytes) -> tuple[CachedResponse, float] | None:
        """The entry of `key` and its remaining lifetime in seconds, or None (a miss, or the
        tier is down or slow)."""
        if self.state != "up":
            return None
        name = self._entry(key)

        async def lookup() -> tuple[bytes | None, int]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                value, pttl = await pipe.execute()
            return value, pttl

        found = await self._try("get", lookup, self._timeout)
        value, pttl = found if found is not None else (None, 0)
        if value is None:
            return None
        try:
            response = decode(value)
        except ValueError as err:
            self._count("decode", None)
            log.warning("unreadable entry in the shared cache tier", error=str(err))
            return None
        return response, max(pttl, 1) / 1000.0

    def put(self, key: bytes, response: CachedResponse, ttl: float) -> None:
        """Write `response` through, in the background (the caller has its answer already)."""
        if self.state != "up":
            return
        data = encode(response)
        seconds = max(math.ceil(ttl), 1)
        name, index, member = self._entry(key), self._scope(response.scope), key.hex()

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(name, data, px=max(int(ttl * 1000), 1))
                pipe.sadd(index, member)
                # The index outlives its longest entry: set a TTL if it has none, raise it if
                # this entry lives longer.
                pipe.expire(index, seconds, nx=True)
                pipe.expire(index, seconds, gt=True)
                await pipe.execute()

        task = asyncio.create_task(self._try("put", write, self._timeout))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    # ---- invalidation (admin) ----------------------------------------------------------------

    async def invalidate(self, key: bytes) -> int:
        """Drop the entry of `key`; how many were dropped (0 or 1)."""

        async def unlink() -> int:
            return int(await self._client.unlink(self._entry(key)))

        return await self._admin("invalidate", unlink)

    async def invalidate_scope(self, namespace: str) -> int:
        """Drop every entry stored under `namespace` or a scope inside it; how many."""

        async def drop() -> int:
            removed = 0
            indexes = [self._scope(namespace).encode()]
            pattern = _glob_escape(self._scope(namespace + "/")) + "*"
            indexes += [n async for n in self._scan(pattern)]
            for index in indexes:
                members = [
                    m if isinstance(m, bytes) else m.encode()
                    for m in await self._client.smembers(index)
                ]
                for chunk in _chunks(members):
                    names = [f"{self._prefix}e:{m.decode()}" for m in chunk]
                    removed += int(await self._client.unlink(*names))
                    # Remove only what was read: entries written meanwhile stay indexed.
                    await self._client.srem(index, *chunk)
            return removed

        return await self._admin("invalidate", drop)

    async def clear(self) -> int:
        """Drop every key of this gateway's prefix; how many entries there were."""
        entries = self._prefix + "e:"

        async def drop() -> int:
            removed = 0
            batch: list[bytes] = []
            async for name in self._scan(_glob_escape(self._prefix) + "*"):
                batch.append(name)
                if len(batch) >= _BATCH:
                    removed += await self._unlink_counting(batch, entries)
                    batch = []
            return removed + await self._unlink_counting(batch, entries)

        return await self._admin("invalidate", drop)

    # ---- internals ---------------------------------------------------------------------------

    def _entry(self, key: bytes) -> str:
        return f"{self._prefix}e:{key.hex()}"

    def _scope(self, scope: str) -> str:
        return f"{self._prefix}s:{scope}"

    async def _scan(self, pattern: str) -> AsyncIterator[bytes]:
        async for name in self._client.scan_iter(match=pattern, count=_BATCH):
            yield name

    async def _unlink_counting(self, names: list[bytes], entries: str) -> int:
        if not names:
            return 0
        await self._client.unlink(*names)
        return sum(1 for n in names if n.decode().startswith(entries))

    async def _ping(self) -> bool:
        return bool(await self._client.ping())

    async def _admin(self, op: str, body: Callable[[], Awaitable[int]]) -> int:
        if self.state != "up":
            raise SharedTierUnavailable(f"the shared cache tier is {self.state}")
        done = await self._try(op, body, self._admin_timeout)
        if done is None:
            raise SharedTierUnavailable("the shared cache tier failed; see the gateway's log")
        return done

    async def _try(self, op: str, body: Callable[[], Awaitable[_T]], bound: float) -> _T | None:
        """`body` within `bound` seconds; None if it failed (the tier is then down)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(bound):
                result = await body()
        except _FAULTS as err:
            self._count(op, None)
            self._down(op, err)
            return None
        self._count(op, time.perf_counter() - started)
        if self.state != "up":
            self._up()
        return result

    def _count(self, op: str, seconds: float | None) -> None:
        if seconds is None:
            self.errors += 1
        if self._observe is not None:
            self._observe(op, seconds)

    def _up(self) -> None:
        log.info("shared cache tier " + ("reconnected" if self.state == "down" else "connected"))
        self.state = "up"

    def _down(self, op: str, err: BaseException) -> None:
        if self.state != "down":
            log.warning(
                "shared cache tier unavailable; serving without it until it answers again",
                op=op,
                error=repr(err),
            )
        self.state = "down"
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.create_task(self._reconnecting(), name="redis-reconnect")

    async def _reconnecting(self) -> None:
        while self.state == "down":
            await asyncio.sleep(self._reconnect_seconds)
            await self._try("ping", self._ping, self._timeout)


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _chunks(items: list[bytes]) -> Iterable[list[bytes]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]
