"""The exact cache key: xxh3-128 over a canonical encoding of everything that shapes the output.

Scope (the tenant's cache namespace, or a namespace inside it), route, the backend model's
identity (model id and revision from /info), the final prompt (after templating), every
sampling, stopping and response option as sent (unset options stay unset: the backend's default
applies, and it is part of the model's identity), and the seed. Two requests share a key only
if a deterministic backend would give them the same answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import xxhash

__all__ = ["CacheKeyParts", "cache_key"]

_VERSION = 1  # bump when the encoding changes: old entries then simply miss


@dataclass(frozen=True)
class CacheKeyParts:
    """What a key is made of."""

    scope: str
    route: str
    model: str
    """Model id and revision, e.g. `meta-llama/Llama-3.1-8B@5206a32e`."""
    prompt: str
    parameters: dict[str, Any]
    """TGI parameters as sent (only those set)."""
    tokens: bool
    """Per-token details were asked for."""


def cache_key(parts: CacheKeyParts) -> bytes:
    """The 16-byte key."""
    canonical = json.dumps(
        [_VERSION, parts.scope, parts.route, parts.model, parts.prompt, parts.parameters,
         parts.tokens],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip
    return xxhash.xxh3_128_digest(canonical.encode("utf-8"))
