"""Turns a scheduled batch into tensors, runs the model over the paged KV cache, samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from streamgate.engine.core.sampler import SampleResult, sample
from streamgate.engine.core.scheduler import ScheduledBatch
from streamgate.engine.core.sequence import Sequence
from streamgate.engine.model.llama import (
    AttentionBatch,
    DecodeGroup,
    KVCache,
    LlamaForCausalLM,
    PrefillSpan,
)

# Longest context of a decode group relative to its shortest (plus a constant slack).
DECODE_GROUP_SPREAD = 1.5


@dataclass
class StepOutput:
    """One sampled token per sequence of the step, in `seqs` order."""

    seqs: list[Sequence]
    sample: SampleResult
    # seq_id -> logprob of each prompt token given the ones before it (first one has none).
    prefill_logprobs: dict[int, list[float]] = field(default_factory=dict)


class ModelRunner:
    """Owns the model and its KV cache; called only from the engine's step thread."""

    def __init__(
        self, model: LlamaForCausalLM, num_blocks: int, block_size: int, dtype: torch.dtype
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.device = next(model.parameters()).device
        self.cache = KVCache(model.config, num_blocks, block_size, dtype, self.device)

    def _slot(self, block_table: list[int], position: int) -> int:
        bs = self.block_size
        return block_table[position // bs] * bs + position % bs

    @staticmethod
    def group_decodes(decodes: list[Sequence]) -> list[list[Sequence]]:
        """Sort by context length and cut where padding to the longest would waste too much.

        Attention over padded contexts costs as much as over real ones; a few more, smaller
        calls are cheaper than one call padded to the longest sequence of a mixed batch.
        """
        ordered = sorted(decodes, key=lambda s: s.num_tokens)
        groups: list[list[Sequence]] = []
        for seq in ordered:
            if groups and seq.num_tokens <= DECODE_GROUP_SPREAD * groups[-1][0].num_tokens + 64:
                groups[-1].append(seq)
            else:
                groups.append([seq])
        return groups

    def _blocks_for(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def _tensor(self, data: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(data, dtype=torch.long, device=self.device)

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionBatch]:
        """Flatten the step: prefill spans first, then the decode tokens."""
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        spans: list[PrefillSpan] = []
        for seq in batch.prefills:
            start, end, table = seq.num_computed_tokens, seq.num_tokens, seq.block_table
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            slots += [self._slot(table, p) for p in range(start, end)]
            context = mask = None
            if start > 0:
                width = self._blocks_for(end)
                context = self._tensor(table[:width])
                keys = torch.arange(width * self.block_size, device=self.device).unsqueeze(0)
                queries = torch.arange(start, end, device=self.device).unsqueeze(1)
                mask = keys <= queries
            spans.append(PrefillSpan(len(positions) - (end - start), end - start, context, mask))

        groups: list[DecodeGroup] = []
        decode_groups = self.group_decodes(batch.decodes)
        # Rows follow the groups; the batch takes that order so outputs line up with its rows.
        batch.decodes = [seq for group in decode_groups for seq in group]
        for group in decode_groups:
            lengths = [seq.num_tokens for seq in group]
            start = len(input_ids)
            for seq, length in zip(group, lengths, strict=True):
                input_ids.append(seq.token_ids[-1])
                positions.append(length - 1)
                slots.append(self._slot(seq.block_table, length - 1))
            width = self._blocks_for(lengths[-1])
            tables = self._tensor(
                [s.block_table[:width] + [0] * (width - len(s.block_table)) for s in group]
            )
            groups.append(DecodeGroup(start, tables, self._tensor(lengths)))
        attn = AttentionBatch(
            block_size=self.block_size,
            slot_mapping=self._tensor(slots),
            prefills=spans,
            decodes=groups,
        )
        return self._tensor(input_ids), self._tensor(positions), attn

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> StepOutput:
        input_ids, positions, attn = self.prepare(batch)
        hidden = self.model(input_ids, positions, attn, self.cache)
        seqs = batch.sequences
        last_rows = [span.start + span.length - 1 for span in attn.prefills]
        last_rows += range(len(input_ids) - len(batch.decodes), len(input_ids))
        logits = self.model.logits(hidden[self._tensor(last_rows)])
        out = StepOutput(seqs=seqs, sample=sample(logits, seqs))
        for seq, span in zip(batch.prefills, attn.prefills, strict=True):
            if seq.params.prefill_logprobs and seq.num_generated == 0:
                out.prefill_logprobs[seq.seq_id] = self._prompt_logprobs(seq, hidden, span)
        return out

    def _prompt_logprobs(
        self, seq: Sequence, hidden: torch.Tensor, span: PrefillSpan
    ) -> list[float]:
        rows = hidden[span.start : span.start + span.length - 1]
        logprobs = self.model.logits(rows).log_softmax(dim=-1)
        targets = self._tensor(seq.token_ids[1 : span.length]).unsqueeze(1)
        values: list[float] = logprobs.gather(1, targets).squeeze(1).tolist()
        return values
