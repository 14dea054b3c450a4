"""TGI's answers that are not streams: `GenerateResponse` (with `Details`) and `/tokenize`.

Plain dicts, built by small functions, with TGI's key order and TGI's rule for optional keys:
omitted (serde's `skip_serializing_if`) where TGI omits them, null where TGI writes null.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from streamgate.tgi.events import TokenFields, token_json
from streamgate.tgi.serde import finite_or_none

__all__ = [
    "PrefillTokenJSON",
    "SimpleTokenJSON",
    "best_of_sequence_json",
    "details_json",
    "generate_response_json",
    "prefill_token_json",
    "simple_tokens_json",
]


class PrefillTokenJSON(TypedDict):
    """TGI `PrefillToken`."""

    id: int
    text: str
    logprob: float | None


class SimpleTokenJSON(TypedDict):
    """TGI `SimpleToken`, one token of a `/tokenize` answer."""

    id: int
    text: str
    start: int
    stop: int


def prefill_token_json(token: TokenFields) -> PrefillTokenJSON:
    """TGI `PrefillToken`: the first prompt token has no logprob (null)."""
    return {"id": token.id, "text": token.text, "logprob": finite_or_none(token.logprob)}


def details_json(
    *,
    finish_reason: str,
    generated_tokens: int,
    seed: int | None,
    prefill: Sequence[TokenFields],
    tokens: Sequence[TokenFields],
    top_tokens: Sequence[Sequence[TokenFields]] | None,
    cached_tokens: int,
    best_of_sequences: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """TGI `Details` of a non-streamed generation.

    `top_tokens` is omitted unless top_n_tokens was asked for, `best_of_sequences` unless
    best_of > 1, as TGI's `skip_serializing_if` does. `cached_tokens` is an extension, as in
    the stream's details.
    """
    out: dict[str, Any] = {
        "finish_reason": finish_reason,
        "generated_tokens": generated_tokens,
        "seed": seed,
        "prefill": [prefill_token_json(t) for t in prefill],
        "tokens": [token_json(t) for t in tokens],
        "cached_tokens": cached_tokens,
    }
    if best_of_sequences is not None:
        out["best_of_sequences"] = best_of_sequences
    if top_tokens:
        out["top_tokens"] = [[token_json(t) for t in step] for step in top_tokens]
    return out


def best_of_sequence_json(
    *,
    generated_text: str,
    finish_reason: str,
    generated_tokens: int,
    seed: int | None,
    prefill: Sequence[TokenFields],
    tokens: Sequence[TokenFields],
    top_tokens: Sequence[Sequence[TokenFields]] | None,
) -> dict[str, Any]:
    """TGI `BestOfSequence`: one of the candidates that lost to the returned one."""
    out: dict[str, Any] = {
        "generated_text": generated_text,
        "finish_reason": finish_reason,
        "generated_tokens": generated_tokens,
        "seed": seed,
        "prefill": [prefill_token_json(t) for t in prefill],
        "tokens": [token_json(t) for t in tokens],
    }
    if top_tokens:
        out["top_tokens"] = [[token_json(t) for t in step] for step in top_tokens]
    return out


def generate_response_json(generated_text: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """TGI `GenerateResponse`: `details` is omitted (not null) when not asked for."""
    out: dict[str, Any] = {"generated_text": generated_text}
    if details is not None:
        out["details"] = details
    return out


def simple_tokens_json(tokens: Iterable[tuple[int, str, int, int]]) -> list[SimpleTokenJSON]:
    """TGI `TokenizeResponse`: (id, text, start, stop) per token."""
    return [{"id": i, "text": t, "start": a, "stop": b} for i, t, a, b in tokens]
