"""The prefix index: which leading blocks each replica has seen, bounded per replica (LRU)."""

from __future__ import annotations

from streamgate.routing import PrefixIndex


def test_the_prefix_index_matches_leading_blocks_and_forgets_the_oldest() -> None:
    index = PrefixIndex(capacity=4)
    index.record("r1", [1, 2, 3])
    assert index.match("r1", [1, 2, 3, 4]) == 3
    assert index.match("r1", [9, 2, 3]) == 0
    assert index.match("r2", [1]) == 0
    index.record("r1", [7, 8])  # capacity 4: 1 is the least recently used
    assert index.size("r1") == 4 and index.match("r1", [1, 2]) == 0
    index.forget("r1")
    assert index.size("r1") == 0
