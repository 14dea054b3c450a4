"""The exact cache as the gateway uses it: the in-process tier, in front of the shared tier.

A lookup asks the local tier, then (on a miss) Redis; a Redis hit fills the local tier for the
entry's remaining lifetime. A store goes to both (to Redis in the background). Invalidations
apply to both tiers, and are announced to the fleet's other gateways (cache/broadcast.py),
which drop their local copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import RedisError

from streamgate.cache.broadcast import Invalidation, InvalidationFeed
from streamgate.cache.entry import CachedResponse
from streamgate.cache.local import LocalCache
from streamgate.cache.shared import RedisTier, SharedTierUnavailable

__all__ = ["Found", "Removed", "TieredCache", "within"]

Tier = Literal["local", "redis"]


@dataclass(frozen=True)
class Found:
    """The outcome of a lookup: the entry (None on a miss) and the last tier asked."""

    response: CachedResponse | None
    tier: Tier


@dataclass(frozen=True)
class Removed:
    """Entries dropped by an invalidation, per tier."""

    local: int
    shared: int


class TieredCache:
    """See the module doc. `shared` and `feed` are None when no Redis is configured."""

    def __init__(
        self,
        local: LocalCache,
        shared: RedisTier | None = None,
        feed: InvalidationFeed | None = None,
    ) -> None:
        self.local = local
        self.shared = shared
        self._feed = feed
        if feed is not None:
            feed.listen(self._apply)

    @property
    def shared_state(self) -> str:
        """The shared tier's state: disabled, connecting, up or down."""
        return "disabled" if self.shared is None else self.shared.state

    async def get(self, key: bytes) -> Found:
        """The live entry of `key`, from the nearest tier that has it."""
        response = self.local.get(key)
        if response is not None or self.shared is None or self.shared.state != "up":
            return Found(response, "local")  # a down tier is not asked
        found = await self.shared.get(key)
        if found is None:
            # While Redis was asked, an identical generation may have ended and been stored
            # here: without this look, the caller would generate it a second time.
            response = self.local.get(key)
            return Found(response, "local" if response is not None else "redis")
        response, ttl = found
        self.local.put(key, response, ttl)
        return Found(response, "redis")

    def put(self, key: bytes, response: CachedResponse, ttl: float) -> None:
        """Store in both tiers."""
        self.local.put(key, response, ttl)
        if self.shared is not None:
            self.shared.put(key, response, ttl)

    async def invalidate(self, key: bytes) -> Removed:
        """Drop the entry of `key` (SharedTierUnavailable if Redis could not be reached: the
        local tier is invalidated regardless)."""
        local = 1 if self.local.invalidate(key) else 0
        shared = await self.shared.invalidate(key) if self.shared else 0
        await self._announce(Invalidation("key", key.hex()))
        return Removed(local, shared)

    async def invalidate_scope(self, namespace: str) -> Removed:
        """Drop the entries of `namespace` and of the scopes inside it."""
        local = self.local.invalidate_where(within(namespace))
        shared = await self.shared.invalidate_scope(namespace) if self.shared else 0
        await self._announce(Invalidation("scope", namespace))
        return Removed(local, shared)

    async def clear(self) -> Removed:
        """Drop everything."""
        local = self.local.clear()
        shared = await self.shared.clear() if self.shared else 0
        await self._announce(Invalidation("all"))
        return Removed(local, shared)

    async def _announce(self, invalidation: Invalidation) -> None:
        if self._feed is None:
            return
        try:
            await self._feed.publish(invalidation)
        except (RedisError, OSError, TimeoutError) as err:
            raise SharedTierUnavailable(
                f"the other gateways could not be told ({err!r}); their local copies expire "
                "with their TTL"
            ) from None

    def _apply(self, invalidation: Invalidation) -> None:
        """Another gateway's invalidation, on this gateway's local tier."""
        if invalidation.kind == "all":
            self.local.clear()
        elif invalidation.kind == "scope":
            self.local.invalidate_where(within(invalidation.value))
        else:
            with contextlib.suppress(ValueError):  # not a key: nothing of ours
                self.local.invalidate(bytes.fromhex(invalidation.value))


def within(namespace: str) -> Callable[[CachedResponse], bool]:
    """Entries stored under `namespace` or a scope inside it."""

    def matches(entry: CachedResponse) -> bool:
        return entry.scope == namespace or entry.scope.startswith(namespace + "/")

    return matches
