"""Invalidations announced to the other gateways of a fleet, over Redis pub/sub.

An admin invalidation on one gateway clears its local tier and the shared tier, then announces
itself here; every other gateway listening on the channel drops its local copies. A gateway
that is disconnected from Redis when an announcement goes out misses it: its copies then live
until they expire (at most `limits.max_cache_ttl_seconds`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamgate.config import RedisConfig
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.logging import get_logger

__all__ = ["Invalidation", "InvalidationFeed"]

log = get_logger(__name__)

Kind = Literal["key", "scope", "all"]


@dataclass(frozen=True)
class Invalidation:
    """What to drop: a key (hex), a scope and the scopes inside it, or everything."""

    kind: Kind
    value: str = ""


class InvalidationFeed:
    """Publishes this gateway's invalidations and applies the others' (`listen`)."""

    def __init__(self, config: RedisConfig) -> None:
        self.origin = uuid.uuid4().hex
        self._channel = config.key_prefix + "invalidations"
        self._timeout = config.admin_timeout_seconds
        self._reconnect_seconds = config.reconnect_seconds
        # Its own connections: a subscriber blocks on its socket, without a read timeout.
        self._client = Redis.from_url(config.url, socket_connect_timeout=self._timeout)
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, invalidation: Invalidation) -> None:
        """Tell the fleet; raises RedisError, OSError or TimeoutError if Redis is unreachable."""
        message = {"origin": self.origin, "kind": invalidation.kind, "value": invalidation.value}
        async with asyncio.timeout(self._timeout):
            await self._client.publish(self._channel, json.dumps(message))

    def listen(self, apply: Callable[[Invalidation], None]) -> None:
        """Apply every other gateway's invalidations from now on (reconnecting as needed)."""
        self._listener = asyncio.create_task(self._listen(apply), name="cache-invalidations")

    async def close(self) -> None:
        """Stop listening and disconnect."""
        if self._listener is not None:
            await cancel_and_wait({self._listener})
        await self._client.aclose()

    async def _listen(self, apply: Callable[[Invalidation], None]) -> None:
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._received(message["data"], apply)
            except (RedisError, OSError, TimeoutError) as err:
                log.debug("cache invalidation feed disconnected", error=repr(err))
            await asyncio.sleep(self._reconnect_seconds)

    def _received(self, data: Any, apply: Callable[[Invalidation], None]) -> None:
        try:
            raw = json.loads(data)
            if raw["origin"] == self.origin:
                return  # this gateway's own, applied already
            kind = raw["kind"]
            if kind not in ("key", "scope", "all"):
                raise ValueError(f"unknown kind {kind!r}")
            invalidation = Invalidation(kind, str(raw.get("value", "")))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("unreadable cache invalidation announcement", error=repr(err))
            return
        apply(invalidation)
