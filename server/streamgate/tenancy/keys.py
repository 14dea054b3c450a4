"""API keys: only their SHA-256 is kept, looked up in a dict.

Keys are random strings of 190+ bits (`new_key`), so a fast unsalted hash is enough: nothing
can be guessed from it, and a lookup costs one hash per call.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamgate.tenancy.tenants import ApiKey

__all__ = ["KEY_PREFIX", "KeyStore", "hash_key", "new_key"]

KEY_PREFIX = "sg-"
"""Prefix of the keys `new_key` makes (any string works as a key)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of `key`, as configured in `sha256`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


class KeyStore:
    """The configured keys by hash."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_hash: dict[str, ApiKey] = {}
        for key in keys:
            if key.sha256 in self._by_hash:
                other = self._by_hash[key.sha256]
                raise ValueError(
                    f"the keys {other.label} and {key.label} are the same key (equal sha256)"
                )
            self._by_hash[key.sha256] = key

    def lookup(self, key: str) -> ApiKey | None:
        """The key's entry, or None when it is unknown."""
        return self._by_hash.get(hash_key(key))

    def __len__(self) -> int:
        return len(self._by_hash)
