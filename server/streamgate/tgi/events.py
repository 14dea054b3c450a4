"""TGI's stream events: a `StreamResponse` per generated token, or a last error event.

Every event of `POST /generate_stream` (and `POST /` with `stream: true`) is one generated
token: `{"index", "token", "top_tokens", "generated_text", "details"}`. The last token's event
carries `generated_text` and, when asked for, `details` (`StreamDetails`). A failure inside a
stream is a last event `{"error", "error_type"}` instead (see `streamgate.tgi.errors`).

Client side (the adapter), lenient: `parse_stream_event` decodes one event into frozen
dataclasses, ignoring unknown keys and tolerating missing optional ones. pydantic-core parses
and validates a token event in one pass, about three times as fast as `json.loads` and building
the dataclasses by hand (measured on a token event and on a last event with details).

Server side (the engine), cheap: one event goes out per token, so events are plain dicts
built by small functions (`stream_response_json`), with TGI's key order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypedDict

from pydantic import TypeAdapter, ValidationError

from streamgate.tgi.errors import excerpt
from streamgate.tgi.serde import finite_or_none

__all__ = [
    "StreamDetails",
    "StreamDetailsJSON",
    "StreamError",
    "StreamEvent",
    "StreamResponseJSON",
    "Token",
    "TokenFields",
    "TokenJSON",
    "parse_stream_event",
    "stream_details_json",
    "stream_response_json",
    "token_json",
]


# ---- decoded (client side) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """One token: TGI's `Token`. `text` may be empty while a multi-byte character is split."""

    id: int
    text: str
    logprob: float | None = None
    special: bool = False


@dataclass(frozen=True, slots=True)
class StreamDetails:
    """TGI's `StreamDetails`, carried by the last event of a stream."""

    finish_reason: str  # "length" | "eos_token" | "stop_sequence"
    generated_tokens: int
    input_length: int | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One `data:` event of a stream: one generated token (TGI's `StreamResponse`).

    The last event has `generated_text` set and, when the request asked for details,
    `details` too; `final` tells it apart.
    """

    index: int
    token: Token
    top_tokens: tuple[Token, ...] = ()
    generated_text: str | None = None
    details: StreamDetails | None = None

    @property
    def final(self) -> bool:
        """True for the last event of a stream."""
        return self.generated_text is not None or self.details is not None


@dataclass(frozen=True, slots=True)
class StreamError:
    """An in-stream error event: `{"error": ..., "error_type": ...}`."""

    message: str
    error_type: str | None


def parse_stream_event(payload: bytes | str) -> StreamEvent | StreamError:
    """Decode the data of one SSE event of a TGI stream.

    Raises `ValueError` for malformed JSON or an event that is neither a token nor an error.
    """
    # Every event but an error event ends here (try, not contextlib.suppress: 0.4 us less).
    try:
        return _STREAM_EVENT.validate_json(payload)
    except ValidationError:
        pass
    try:
        obj = json.loads(payload)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise ValueError(f"malformed JSON in a data line: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"an event that is not a JSON object: {excerpt(payload)}")
    if obj.get("token") is None:
        if "error" in obj:
            error_type = obj.get("error_type")
            if not isinstance(error_type, str):
                error_type = None
            return StreamError(str(obj["error"]), error_type)
        raise ValueError(f"an event with neither token nor error: {excerpt(payload)}")
    # Tolerated, though TGI never sends them: a missing index, null top tokens.
    obj.setdefault("index", 0)
    if obj.get("top_tokens") is None:
        obj["top_tokens"] = ()
    try:
        return _STREAM_EVENT.validate_python(obj)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"malformed token event ({problems}): {excerpt(payload)}") from None


_STREAM_EVENT = TypeAdapter(StreamEvent)


# ---- JSON (server side) ----------------------------------------------------------------------


class TokenFields(Protocol):
    """What the JSON of a token is built from (the engine's tokens, or `Token`)."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def logprob(self) -> float | None: ...
    @property
    def special(self) -> bool: ...


class TokenJSON(TypedDict):
    """TGI `Token`."""

    id: int
    text: str
    logprob: float | None
    special: bool


class StreamDetailsJSON(TypedDict):
    """TGI `StreamDetails`, plus `cached_tokens`."""

    finish_reason: str
    generated_tokens: int
    seed: int | None
    input_length: int
    cached_tokens: int  # ours, not TGI's: prompt tokens whose prefill the prefix cache skipped


class StreamResponseJSON(TypedDict):
    """TGI `StreamResponse`."""

    index: int
    token: TokenJSON
    top_tokens: list[TokenJSON]
    generated_text: str | None
    details: StreamDetailsJSON | None


def token_json(token: TokenFields) -> TokenJSON:
    """TGI `Token`: id, text, logprob, special."""
    return {
        "id": token.id,
        "text": token.text,
        "logprob": finite_or_none(token.logprob),
        "special": token.special,
    }


def stream_details_json(
    *,
    finish_reason: str,
    generated_tokens: int,
    seed: int | None,
    input_length: int,
    cached_tokens: int,
) -> StreamDetailsJSON:
    """TGI `StreamDetails`, carried by the last event of a stream.

    `cached_tokens` is an extension (TGI clients ignore unknown keys): the prompt tokens whose
    prefill a prefix cache skipped.
    """
    return {
        "finish_reason": finish_reason,
        "generated_tokens": generated_tokens,
        "seed": seed,
        "input_length": input_length,
        "cached_tokens": cached_tokens,
    }


def stream_response_json(
    index: int,
    token: TokenFields,
    top_tokens: Iterable[TokenFields],
    *,
    generated_text: str | None = None,
    details: StreamDetailsJSON | None = None,
) -> StreamResponseJSON:
    """TGI `StreamResponse` of one token.

    `index` is 1-based as in TGI (its router counts the prefill message it never sends for
    streams). `generated_text` is set on the last event only, `details` only when the request
    asked for them too. `top_tokens` is always present (TGI omits it when empty; both parse the
    same in every client).
    """
    return {
        "index": index,
        "token": token_json(token),
        "top_tokens": [token_json(t) for t in top_tokens],
        "generated_text": generated_text,
        "details": details,
    }
