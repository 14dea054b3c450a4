"""The exact response cache: keys, entries and the in-process tier."""

from streamgate.cache.entry import CachedResponse
from streamgate.cache.key import CacheKeyParts, cache_key
from streamgate.cache.local import LocalCache

__all__ = ["CacheKeyParts", "CachedResponse", "LocalCache", "cache_key"]
