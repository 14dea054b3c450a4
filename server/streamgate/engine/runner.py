"""Turns a scheduled batch into tensors, runs the model over the paged KV cache, samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from streamgate.engine.model import AttentionBatch, KVCache, LlamaForCausalLM, PrefillSpan
from streamgate.engine.sampler import SampleResult, sample
from streamgate.engine.scheduler import ScheduledBatch
from streamgate.engine.sequence import Sequence


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
                context = self._tensor([self._slot(table, p) for p in range(end)])
                keys = torch.arange(end, device=self.device).unsqueeze(0)
                queries = torch.arange(start, end, device=self.device).unsqueeze(1)
                mask = keys <= queries
            spans.append(PrefillSpan(len(positions) - (end - start), end - start, context, mask))

        decode_start = len(input_ids)
        decode_slots = decode_mask = None
        if batch.decodes:
            lengths = [seq.num_tokens for seq in batch.decodes]
            for seq, length in zip(batch.decodes, lengths, strict=True):
                input_ids.append(seq.token_ids[-1])
                positions.append(length - 1)
                slots.append(self._slot(seq.block_table, length - 1))
            max_len = max(lengths)
            width = (max_len + self.block_size - 1) // self.block_size
            tables = self._tensor(
                [s.block_table[:width] + [0] * (width - len(s.block_table)) for s in batch.decodes]
            )
            pos = torch.arange(max_len, device=self.device)
            decode_slots = tables[:, pos // self.block_size] * self.block_size + (
                pos % self.block_size
            )
            decode_mask = (pos.unsqueeze(0) < self._tensor(lengths).unsqueeze(1))[:, None, None]
        attn = AttentionBatch(
            slot_mapping=self._tensor(slots),
            prefills=spans,
            decode_start=decode_start,
            decode_slots=decode_slots,
            decode_mask=decode_mask,
        )
        return self._tensor(input_ids), self._tensor(positions), attn

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> StepOutput:
        input_ids, positions, attn = self.prepare(batch)
        hidden = self.model(input_ids, positions, attn, self.cache)
        seqs = batch.sequences
        last_rows = [span.start + span.length - 1 for span in attn.prefills]
        last_rows += range(attn.decode_start, len(input_ids))
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
