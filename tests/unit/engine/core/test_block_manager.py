"""Paged KV blocks: reference counts, prefix reuse, LRU eviction."""

from streamgate.engine.core.block_manager import BlockManager
from streamgate.engine.core.sequence import SamplingParams, Sequence


def seq(tokens: list[int]) -> Sequence:
    return Sequence(prompt_ids=tokens, params=SamplingParams())


def finish_prefill(bm: BlockManager, s: Sequence) -> None:
    s.num_computed_tokens = s.num_tokens
    bm.commit(s)


def test_allocate_and_free_restore_every_block() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    s = seq(list(range(10)))
    assert bm.allocate(s)
    assert len(s.block_table) == 3
    assert bm.num_free == 5
    finish_prefill(bm, s)
    bm.free(s)
    assert bm.num_free == 8
    assert bm.num_cached_free == 2  # the two full blocks stay reusable


def test_shared_prefix_is_reused_and_last_token_recomputed() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    a = seq(list(range(12)))
    assert bm.allocate(a)
    finish_prefill(bm, a)
    b = seq([*list(range(8)), 99, 98])
    assert bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2]
    assert b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    # A prompt made only of cached blocks still recomputes its last block (logits needed).
    c = seq(list(range(12)))
    assert bm.allocate(c)
    assert c.num_computed_tokens == 8


def test_different_prefix_same_block_does_not_hit() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=True)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert bm.allocate(a)
    finish_prefill(bm, a)
    b = seq([0, 0, 0, 0, 5, 6, 7, 8, 9])  # second block equal, first differs
    assert bm.allocate(b)
    assert b.num_computed_tokens == 0


def test_cached_blocks_are_evicted_lru_after_empty_ones() -> None:
    bm = BlockManager(num_blocks=4, block_size=2, enable_prefix_caching=True)
    a = seq([1, 2, 3, 4, 5])
    assert bm.allocate(a)
    finish_prefill(bm, a)
    bm.free(a)
    assert bm.num_cached_free == 2
    b = seq([7, 8])  # needs one block: taken from the empty ones first
    assert bm.allocate(b)
    assert bm.num_cached_free == 2
    c = seq([9, 9, 9, 9, 9])  # needs 3: the empty one, then evicts the tail of `a` first
    bm.free(b)
    assert bm.allocate(c)
    bm.free(c)
    d = seq([1, 2, 3])
    assert bm.allocate(d)
    assert d.num_computed_tokens == 2  # `a`'s head block survived


def test_allocation_that_does_not_fit_changes_nothing() -> None:
    bm = BlockManager(num_blocks=2, block_size=4, enable_prefix_caching=True)
    s = seq(list(range(9)))
    assert not bm.allocate(s)
    assert s.block_table == []
    assert bm.num_free == 2


def test_grow_adds_a_block_at_the_boundary() -> None:
    bm = BlockManager(num_blocks=3, block_size=4, enable_prefix_caching=False)
    s = seq([1, 2, 3, 4])
    assert bm.allocate(s)
    assert bm.grow(s, 4) and len(s.block_table) == 1
    assert bm.grow(s, 5) and len(s.block_table) == 2
    assert bm.grow(s, 12) and len(s.block_table) == 3
    assert not bm.grow(s, 13)


def test_no_prefix_caching_never_hits() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = seq(list(range(9)))
    assert bm.allocate(a)
    finish_prefill(bm, a)
    bm.free(a)
    assert bm.num_cached_free == 0
    b = seq(list(range(9)))
    assert bm.allocate(b)
    assert b.num_computed_tokens == 0
