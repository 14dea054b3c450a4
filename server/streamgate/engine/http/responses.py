"""The engine's results as TGI's JSON: `streamgate.tgi` has the shapes, this fills them.

A stream sends one event per generated token, so `stream_event_json` stays a couple of dict
literals; the non-streamed answer is built once per request (`generate_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamgate import tgi
from streamgate.engine.core.sequence import FinishInfo, TokenEvent, TokenInfo

__all__ = ["Completed", "generate_json", "stream_event_json"]


@dataclass
class Completed:
    """Every token of one finished sequence."""

    finish: FinishInfo
    tokens: list[TokenInfo] = field(default_factory=list)
    top_tokens: list[tuple[TokenInfo, ...]] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        """TGI's best_of choice: the highest mean token logprob wins."""
        lps = [t.logprob for t in self.tokens if t.logprob is not None]
        return sum(lps) / len(lps) if lps else float("-inf")


def stream_event_json(event: TokenEvent, *, details: bool, prefix: str) -> tgi.StreamResponseJSON:
    """TGI `StreamResponse` of one token event. The last event (the one with `finish`) carries
    the generated text after `prefix` (the prompt, with return_full_text) and, when the request
    asked for them, the details."""
    # The engine counts tokens from 0, TGI's index from 1.
    finish = event.finish
    if finish is None:
        return tgi.stream_response_json(event.index + 1, event.token, event.top_tokens)
    return tgi.stream_response_json(
        event.index + 1,
        event.token,
        event.top_tokens,
        generated_text=prefix + finish.generated_text,
        details=_stream_details(finish) if details else None,
    )


def _stream_details(finish: FinishInfo) -> tgi.StreamDetailsJSON:
    return tgi.stream_details_json(
        finish_reason=finish.reason,
        generated_tokens=finish.generated_tokens,
        seed=finish.seed,
        input_length=finish.input_length,
        cached_tokens=finish.cached_tokens,
    )


def generate_json(
    best: Completed,
    others: Sequence[Completed],
    *,
    prefix: str,
    details: bool,
    top_tokens: bool,
) -> dict[str, Any]:
    """TGI `GenerateResponse` of the `best` sequence; with `details`, the `others` of a best_of
    request are its `best_of_sequences` (none: not best_of). `prefix` goes before every text
    (the prompt, with return_full_text); `top_tokens`: top_n_tokens was asked for."""
    if not details:
        return tgi.generate_response_json(prefix + best.finish.generated_text, None)
    losers = None
    if others:
        losers = [
            tgi.best_of_sequence_json(
                generated_text=prefix + r.finish.generated_text,
                finish_reason=r.finish.reason,
                generated_tokens=r.finish.generated_tokens,
                seed=r.finish.seed,
                prefill=r.finish.prefill,
                tokens=r.tokens,
                top_tokens=r.top_tokens if top_tokens else None,
            )
            for r in others
        ]
    finish = best.finish
    body = tgi.details_json(
        finish_reason=finish.reason,
        generated_tokens=finish.generated_tokens,
        seed=finish.seed,
        prefill=finish.prefill,
        tokens=best.tokens,
        top_tokens=best.top_tokens if top_tokens else None,
        cached_tokens=finish.cached_tokens,
        best_of_sequences=losers,
    )
    return tgi.generate_response_json(prefix + finish.generated_text, body)
