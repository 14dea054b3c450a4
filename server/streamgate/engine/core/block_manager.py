"""Paged KV blocks: allocation, reference counts and the prefix cache.

A full block is identified by a chained hash of its tokens, `h_i = xxh64(tokens_i || h_{i-1})`,
so equal hashes mean equal prefixes. Freed blocks that carry a hash stay reusable until they are
evicted, least recently freed first; blocks that never filled are reused before any cached one.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import xxhash

from streamgate.engine.core.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set while this block is the registered holder of that prefix
    token_ids: tuple[int, ...] = field(default=())


def block_hash(token_ids: list[int] | tuple[int, ...], prefix_hash: int | None) -> int:
    """Hash of one full block chained to the hash of the block before it."""
    data = array("i", token_ids).tobytes()
    if prefix_hash is not None:
        data += prefix_hash.to_bytes(8, "little")
    return int(xxhash.xxh64_intdigest(data))


class BlockManager:
    """Owns every KV block; sequences hold block ids in their block tables."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.empty: deque[int] = deque(range(num_blocks))  # free, holding nothing reusable
        self.evictable: OrderedDict[int, None] = OrderedDict()  # free but cached, LRU first
        self.hash_to_block: dict[int, int] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.empty) + len(self.evictable)

    @property
    def num_cached_free(self) -> int:
        return len(self.evictable)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def _cached_prefix(self, seq: Sequence, use_cache: bool) -> list[int]:
        """Blocks already holding the sequence's leading full blocks (never its last token)."""
        if not (self.enable_prefix_caching and use_cache):
            return []
        bs = self.block_size
        hits: list[int] = []
        prefix: int | None = None
        # The last token is always recomputed: its logits are needed to sample the next one.
        for i in range((seq.num_tokens - 1) // bs):
            ids = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = block_hash(ids, prefix)
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != ids:
                break
            hits.append(block_id)
            prefix = h
        return hits

    def allocate(self, seq: Sequence, use_cache: bool = True, reserve: int = 0) -> bool:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks.

        Leaves at least `reserve` blocks free (room for running sequences to grow). Returns False,
        changing nothing, when that does not fit.
        """
        assert not seq.block_table
        hits = self._cached_prefix(seq, use_cache)
        new = self.blocks_needed(seq.num_tokens) - len(hits)
        free_hits = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        if new + reserve > self.num_free - free_hits:
            return False
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.evictable[block_id]
            block.ref_count += 1
            assert block.hash is not None
            seq.block_hashes.append(block.hash)
        seq.block_table = hits + [self._take() for _ in range(new)]
        seq.num_computed_tokens = len(hits) * self.block_size
        return True

    def grow(self, seq: Sequence, num_tokens: int) -> bool:
        """Make room for `num_tokens` tokens in a running sequence; False when out of blocks."""
        missing = self.blocks_needed(num_tokens) - len(seq.block_table)
        if missing > self.num_free:
            return False
        seq.block_table.extend(self._take() for _ in range(missing))
        return True

    def commit(self, seq: Sequence) -> None:
        """Register the blocks the last step filled, so later requests can reuse them."""
        bs = self.block_size
        full = seq.num_computed_tokens // bs
        while len(seq.block_hashes) < full:
            i = len(seq.block_hashes)
            ids = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            prefix = seq.block_hashes[-1] if seq.block_hashes else None
            h = block_hash(ids, prefix)
            seq.block_hashes.append(h)
            if self.enable_prefix_caching and h not in self.hash_to_block:
                block = self.blocks[seq.block_table[i]]
                block.hash, block.token_ids = h, ids
                self.hash_to_block[h] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks; tail blocks first so they are evicted before the head."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is not None:
                    self.evictable[block_id] = None
                else:
                    self.empty.append(block_id)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def _take(self) -> int:
        if self.empty:
            block_id = self.empty.popleft()
        else:
            block_id, _ = self.evictable.popitem(last=False)
            evicted = self.blocks[block_id]
            assert evicted.hash is not None
            del self.hash_to_block[evicted.hash]
            evicted.hash, evicted.token_ids = None, ()
        self.blocks[block_id].ref_count = 1
        return block_id
