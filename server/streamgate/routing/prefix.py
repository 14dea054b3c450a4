"""Prefix block hashes of a prompt: what routing compares to find where a prefix is cached.

The templated prompt's UTF-8 bytes are cut into fixed blocks and hashed as a chain,
`h_i = xxh64(block_i, seed=h_{i-1})`, starting from a salt (model and tenant), so that equal
hashes at position i mean equal prompts up to the end of block i, and tenants never share
entries. Only whole blocks count: a tail shorter than a block is never matched.
"""

from __future__ import annotations

import xxhash

__all__ = ["block_hashes"]


def block_hashes(text: str, salt: str, block_bytes: int, max_blocks: int) -> list[int]:
    """The chained hashes of the first `max_blocks` whole blocks of `text`."""
    data = text.encode("utf-8")
    count = min(len(data) // block_bytes, max_blocks)
    h = xxhash.xxh64_intdigest(salt.encode("utf-8"))
    out: list[int] = []
    for i in range(count):
        h = xxhash.xxh64_intdigest(data[i * block_bytes : (i + 1) * block_bytes], seed=h)
        out.append(h)
    return out
