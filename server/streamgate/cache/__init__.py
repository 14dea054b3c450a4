"""The exact response cache: keys, entries, the in-process tier and the shared Redis tier."""

from streamgate.cache.broadcast import Invalidation, InvalidationFeed
from streamgate.cache.entry import CachedResponse
from streamgate.cache.key import CacheKeyParts, cache_key
from streamgate.cache.local import LocalCache
from streamgate.cache.shared import RedisTier, SharedTierUnavailable
from streamgate.cache.tiers import Found, Removed, TieredCache

__all__ = [
    "CacheKeyParts",
    "CachedResponse",
    "Found",
    "Invalidation",
    "InvalidationFeed",
    "LocalCache",
    "RedisTier",
    "Removed",
    "SharedTierUnavailable",
    "TieredCache",
    "cache_key",
]
