"""Iteration-level (continuous) batching.

Every step runs one new token for each running sequence (decode) plus the prompts of newly
admitted sequences (prefill), in one forward pass. Admission is FIFO and bounded by the prefill
token budget, the batch size and free KV blocks. When a running sequence needs a block and none is
left, the most recently admitted sequence is preempted: its blocks are freed and it is recomputed
later (its prefix is likely still cached), so the engine never deadlocks on memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from streamgate.engine.core.block_manager import BlockManager
from streamgate.engine.core.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """Sequences of one step: prefills compute tokens[num_computed:], decodes one token each."""

    prefills: list[Sequence] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def sequences(self) -> list[Sequence]:
        return self.prefills + self.decodes

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes)


class Scheduler:
    """Decides which sequences run in the next step; owns the waiting and running queues."""

    def __init__(
        self,
        block_manager: BlockManager,
        max_batch_prefill_tokens: int,
        max_batch_size: int,
        static_batching: bool = False,
    ) -> None:
        self.blocks = block_manager
        # Baseline for benchmarks: admit a new batch only once the running one has finished.
        self.static_batching = static_batching
        self.max_batch_prefill_tokens = max_batch_prefill_tokens
        self.max_batch_size = max_batch_size
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions_total = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues (finished or aborted) and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        self._schedule_decodes(batch)
        self._schedule_prefills(batch)
        return batch

    def _schedule_decodes(self, batch: ScheduledBatch) -> None:
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            # The token sampled last step is computed now: it needs a slot.
            while not self.blocks.grow(seq, seq.num_tokens):
                victim = self.running[-1]
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            else:
                batch.decodes.append(seq)
                i += 1

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.preemptions_total += 1

    def _schedule_prefills(self, batch: ScheduledBatch) -> None:
        if self.static_batching and self.running:
            return
        budget = self.max_batch_prefill_tokens
        while self.waiting and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            if seq in batch.preempted:
                break  # no room was found for it this very step
            # Keep one block per running sequence free so admissions do not cause preemptions.
            reserve = len(self.running)
            use_cache = not seq.params.prefill_logprobs
            if not self.blocks.allocate(seq, use_cache=use_cache, reserve=reserve):
                break  # strict FIFO: nobody overtakes the head of the queue
            new_tokens = seq.num_tokens - seq.num_computed_tokens
            # The first prefill of a step always fits, so a long prompt cannot starve.
            if new_tokens > budget and batch.prefills:
                self.blocks.free(seq)
                break
            budget -= new_tokens
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.prefills.append(seq)
