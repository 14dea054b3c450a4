"""`cache`: the exact response cache, in process and optionally shared through Redis."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from streamgate.config.base import Seconds, Section

__all__ = ["CacheConfig", "RedisConfig"]


class RedisConfig(Section):
    """The shared cache tier: entries written through to Redis, read when the local tier misses.

    Redis is never on a request's critical path for longer than `timeout_seconds`: on an error
    or a timeout the tier is marked down and skipped (requests see misses) until a background
    ping succeeds again.
    """

    url: str = "redis://127.0.0.1:6379/0"
    """`redis://[user:password@]host:port/db` (or `rediss://` for TLS, `unix://` for a socket)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.05
    """Bound of one lookup or write; past it the request goes on without Redis."""
    admin_timeout_seconds: Seconds = 30.0
    """Bound of an InvalidateCache on Redis (it scans the gateway's keys)."""
    reconnect_seconds: Seconds = 1.0
    """Interval of the pings that bring a down tier back."""
    max_connections: Annotated[int, Field(ge=1)] = 64
    key_prefix: str = "streamgate:"
    """Every key the gateway writes starts with this (several fleets may share a Redis)."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class CacheConfig(Section):
    """The exact response cache: the in-process tier, and optionally a shared Redis tier."""

    enabled: bool = True
    max_entries: Annotated[int, Field(ge=1)] = 10000
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    default_ttl_seconds: Annotated[int, Field(ge=1)] = 3600
    """Lifetime of an entry whose request set none (at most limits.max_cache_ttl_seconds)."""
    redis: RedisConfig | None = None
    """The shared tier (off when absent)."""
