"""Prefix block hashes: a chain over whole blocks, salted per model and tenant."""

from __future__ import annotations

from streamgate.routing import block_hashes


def test_block_hashes_are_a_chain_over_whole_blocks() -> None:
    a = block_hashes("x" * 100 + "A" * 50, "salt", 32, 100)
    b = block_hashes("x" * 100 + "B" * 50, "salt", 32, 100)
    assert len(a) == 4  # 150 bytes: 4 whole blocks of 32, the tail is ignored
    assert a[:3] == b[:3] and a[3] != b[3]  # equal up to the block where they differ
    assert block_hashes("x" * 100, "other tenant", 32, 100) != a[:3]
    assert len(block_hashes("x" * 1000, "s", 32, 5)) == 5
    # Same bytes, other position: a chain, not a set of block hashes.
    assert block_hashes("yyyy" + "zzzz", "s", 4, 9)[1] != block_hashes("zzzz", "s", 4, 9)[0]
