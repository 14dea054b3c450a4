"""Next-token choice for a batch in which every sequence has its own parameters.

Order as TGI: repetition penalty, frequency penalty, then (when sampling) temperature, top_k,
top_p, typical_p. Reported log-probabilities are those of the distribution actually sampled from
(TGI's convention). Sampling draws from each request's own seeded generator, so a seed reproduces
its output whatever else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamgate.engine.core.sequence import Sequence


@dataclass
class SampleResult:
    """Per row: the chosen token, its logprob, and the top-n alternatives (ids, logprobs)."""

    token_ids: list[int]
    logprobs: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> None:
    """Repetition and frequency penalties over each sequence's tokens so far (in place)."""
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.repetition_penalty == 1.0 and p.frequency_penalty == 0.0:
            continue
        ids = torch.tensor(seq.token_ids, dtype=torch.long, device=logits.device)
        if p.repetition_penalty != 1.0:
            unique = torch.tensor(sorted(set(seq.token_ids)), device=logits.device)
            scores = logits[row, unique]
            penalized = torch.where(
                scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty
            )
            logits[row, unique] = penalized
        if p.frequency_penalty != 0.0:
            counts = torch.bincount(ids, minlength=logits.shape[1]).to(logits.dtype)
            logits[row] -= counts / len(seq.token_ids) * p.frequency_penalty


def apply_warpers(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Temperature, top_k, top_p and typical_p for the rows that sample; -inf marks removed ids."""
    sampling = [s.params.sampling for s in seqs]
    if not any(sampling):
        return logits
    temps = [s.params.temperature if ok else 1.0 for s, ok in zip(seqs, sampling, strict=False)]
    if any(t != 1.0 for t in temps):
        logits = logits / torch.tensor(temps, device=logits.device).unsqueeze(1)
    vocab = logits.shape[1]
    top_k = [
        s.params.top_k if ok and s.params.top_k > 0 else vocab
        for s, ok in zip(seqs, sampling, strict=False)
    ]
    top_p = [s.params.top_p if ok else 1.0 for s, ok in zip(seqs, sampling, strict=False)]
    typical = [s.params.typical_p if ok else 1.0 for s, ok in zip(seqs, sampling, strict=False)]
    if any(k < vocab for k in top_k) or any(p < 1.0 for p in top_p):
        logits = _top_k_top_p(logits, top_k, top_p)
    if any(t < 1.0 for t in typical):
        logits = _typical(logits, typical)
    return logits


def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    device = logits.device
    ks = torch.tensor(top_k, device=device).clamp(max=logits.shape[1]).unsqueeze(1)
    ranks = torch.arange(logits.shape[1], device=device).unsqueeze(0)
    remove = ranks >= ks
    probs = sorted_logits.masked_fill(remove, float("-inf")).softmax(dim=-1)
    # Drop a token when the tokens ranked above it already reach top_p (the best always stays).
    before = probs.cumsum(dim=-1) - probs
    remove |= before >= torch.tensor(top_p, device=device).unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def _typical(logits: torch.Tensor, typical_p: list[float]) -> torch.Tensor:
    logp = logits.log_softmax(dim=-1)
    p = logp.exp()
    entropy = -(torch.nan_to_num(logp * p)).sum(dim=-1, keepdim=True)
    shifted = (-logp - entropy).abs()
    _sorted_shift, order = shifted.sort(dim=-1)
    sorted_p = p.gather(1, order)
    cum = sorted_p.cumsum(dim=-1)
    mass = torch.tensor(typical_p, device=logits.device).unsqueeze(1)
    # Keep the smallest set of most typical tokens whose mass reaches typical_p.
    remove = (cum - sorted_p) >= mass
    keep_sorted = ~remove
    keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> SampleResult:
    """Choose one token per row of `logits` [rows, vocab] (float32, modified in place)."""
    apply_penalties(logits, seqs)
    warped = apply_warpers(logits, seqs)
    logprobs = warped.log_softmax(dim=-1)
    chosen = logprobs.argmax(dim=-1)
    probs = None
    for row, seq in enumerate(seqs):
        if seq.params.sampling:
            if probs is None:
                probs = logprobs.exp()
            chosen[row] = torch.multinomial(probs[row], 1, generator=seq.generator)[0]
    chosen_logprobs = logprobs.gather(1, chosen.unsqueeze(1)).squeeze(1)

    top_n = max(s.params.top_n_tokens for s in seqs)
    top_ids: list[list[int]] = [[] for _ in seqs]
    top_lp: list[list[float]] = [[] for _ in seqs]
    if top_n:
        values, indices = logprobs.topk(top_n, dim=-1)
        all_ids, all_values = indices.tolist(), values.tolist()
        for row, seq in enumerate(seqs):
            n = seq.params.top_n_tokens
            top_ids[row], top_lp[row] = all_ids[row][:n], all_values[row][:n]
    return SampleResult(chosen.tolist(), chosen_logprobs.tolist(), top_ids, top_lp)
