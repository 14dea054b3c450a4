"""Cached responses as bytes, for the shared tier.

JSON, not pickle: whoever can write to the shared Redis must not be able to run code in the
gateway. A value that does not decode (another version wrote it, or it was damaged) is a miss.
"""

from __future__ import annotations

import json
from typing import Any

from streamgate.backends import StreamDetails, StreamEvent, Token
from streamgate.cache.entry import CachedResponse

__all__ = ["decode", "encode"]

_FORMAT = 1


def encode(response: CachedResponse) -> bytes:
    """The bytes of `response`."""
    return json.dumps(
        {
            "format": _FORMAT,
            "scope": response.scope,
            "model": response.model,
            "backend": response.backend,
            "pool": response.pool,
            "input_tokens": response.input_tokens,
            "seed": response.seed,
            "events": [_event(e) for e in response.events],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def decode(data: bytes) -> CachedResponse:
    """The response `data` holds; ValueError if it holds none."""
    try:
        raw = json.loads(data)
        if raw["format"] != _FORMAT:
            raise ValueError(f"cache value format {raw['format']!r}, expected {_FORMAT}")
        events = tuple(_read_event(e) for e in raw["events"])
        if not events or not events[-1].final:
            raise ValueError("cache value without its last event")
        return CachedResponse(
            events=events,
            scope=str(raw["scope"]),
            model=str(raw["model"]),
            backend=str(raw["backend"]),
            pool=str(raw["pool"]),
            input_tokens=int(raw["input_tokens"]),
            seed=None if raw["seed"] is None else int(raw["seed"]),
        )
    except (KeyError, TypeError, IndexError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"malformed cache value: {err!r}") from None


def _token(t: Token) -> list[Any]:
    return [t.id, t.text, t.logprob, t.special]


def _read_token(raw: list[Any]) -> Token:
    token_id, text, logprob, special = raw
    return Token(
        int(token_id), str(text), None if logprob is None else float(logprob), bool(special)
    )


def _event(e: StreamEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"i": e.index, "t": _token(e.token)}
    if e.top_tokens:
        out["top"] = [_token(t) for t in e.top_tokens]
    if e.generated_text is not None:
        out["text"] = e.generated_text
    if e.details is not None:
        d = e.details
        out["details"] = [d.finish_reason, d.generated_tokens, d.input_length, d.seed]
    return out


def _read_event(raw: dict[str, Any]) -> StreamEvent:
    details = None
    if "details" in raw:
        finish_reason, generated, input_length, seed = raw["details"]
        details = StreamDetails(
            str(finish_reason),
            int(generated),
            None if input_length is None else int(input_length),
            None if seed is None else int(seed),
        )
    text = raw.get("text")
    return StreamEvent(
        index=int(raw["i"]),
        token=_read_token(raw["t"]),
        top_tokens=tuple(_read_token(t) for t in raw.get("top", ())),
        generated_text=None if text is None else str(text),
        details=details,
    )
