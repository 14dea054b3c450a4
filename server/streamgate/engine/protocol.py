"""TGI's HTTP wire format: request models and response builders (TGI v3.3 openapi).

Requests are parsed with pydantic, strictly: unknown keys and wrong JSON types are rejected (TGI
would reject wrong types too; unknown keys we reject on purpose so typos do not pass silently).
Every optional parameter also accepts an explicit `null`, because the official `text-generation`
client sends all of them.

Responses are plain dicts built by small functions rather than pydantic models: one is built per
generated token, so they stay cheap. Key order and optional keys follow TGI's serde structs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from streamgate.engine.sequence import FinishInfo, TokenEvent, TokenInfo

# Rust integer widths of TGI's `GenerateParameters`: out-of-range values fail deserialization.
U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]

ErrorType = Literal[
    "validation",
    "overloaded",
    "generation",
    "incomplete_generation",
    "incomplete_generation_stream",
    "healthcheck",
]


class _Strict(BaseModel):
    # strict: no "5" -> 5 or 5.0 -> 5 coercion (serde does none); floats still accept integers.
    # allow_inf_nan=False: Python's json accepts NaN/Infinity literals, TGI's parser does not.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class GenerateParameters(_Strict):
    """TGI's `GenerateParameters`; `None` everywhere means "not given" (TGI's default)."""

    best_of: U64 | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: I32 | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool | None = None
    max_new_tokens: U32 | None = None
    return_full_text: bool | None = None
    stop: list[str] | None = None
    truncate: U64 | None = None
    watermark: bool | None = None
    details: bool | None = None
    decoder_input_details: bool | None = None
    seed: U64 | None = None
    top_n_tokens: U32 | None = None
    grammar: Any = None  # any JSON; rejected by validation when set (no grammar support)
    adapter_id: str | None = None


class GenerateRequest(_Strict):
    """Body of `POST /generate`, `POST /generate_stream` and `POST /tokenize`."""

    inputs: str
    parameters: GenerateParameters | None = None
    # TGI ignores unknown top-level keys; clients commonly send `stream` to these routes, so it
    # is accepted (and ignored: the route decides) rather than rejected like other unknown keys.
    stream: bool | None = None

    @property
    def params(self) -> GenerateParameters:
        """The parameters, defaulted when absent or null."""
        return self.parameters or GenerateParameters()


class CompatGenerateRequest(GenerateRequest):
    """Body of `POST /`: the same fields, where `stream` chooses JSON or SSE."""


M = TypeVar("M", bound=_Strict)


class RequestParseError(ValueError):
    """The body is not JSON or does not match the request schema (TGI: 422 from its extractor)."""


def parse_request(model: type[M], body: bytes) -> M:
    """Parse a JSON body into `model`, with one readable message on failure."""
    try:
        return model.model_validate_json(body)
    except PydanticValidationError as err:
        raise RequestParseError(_describe(err)) from None


def _describe(err: PydanticValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "Failed to deserialize the JSON body into the target type: " + "; ".join(parts)


# ---- responses ---------------------------------------------------------------------------


class TokenJSON(TypedDict):
    id: int
    text: str
    logprob: float | None
    special: bool


class PrefillTokenJSON(TypedDict):
    id: int
    text: str
    logprob: float | None


class StreamDetailsJSON(TypedDict):
    finish_reason: str
    generated_tokens: int
    seed: int | None
    input_length: int
    cached_tokens: int  # ours, not TGI's: prompt tokens whose prefill the prefix cache skipped


class StreamResponseJSON(TypedDict):
    index: int
    token: TokenJSON
    top_tokens: list[TokenJSON]
    generated_text: str | None
    details: StreamDetailsJSON | None


class ErrorJSON(TypedDict):
    error: str
    error_type: str


class SimpleTokenJSON(TypedDict):
    id: int
    text: str
    start: int
    stop: int


def _logprob(value: float | None) -> float | None:
    # serde_json writes NaN and +-inf as null; Python's json would write invalid JSON.
    if value is None or not math.isfinite(value):
        return None
    return value


def token_json(token: TokenInfo) -> TokenJSON:
    """TGI `Token`: id, text, logprob, special."""
    return {
        "id": token.id,
        "text": token.text,
        "logprob": _logprob(token.logprob),
        "special": token.special,
    }


def prefill_token_json(token: TokenInfo) -> PrefillTokenJSON:
    """TGI `PrefillToken`: the first prompt token has no logprob (null)."""
    return {"id": token.id, "text": token.text, "logprob": _logprob(token.logprob)}


def stream_details_json(finish: FinishInfo) -> StreamDetailsJSON:
    """TGI `StreamDetails`, carried by the last event of a stream.

    `cached_tokens` is an extension (TGI clients ignore unknown keys): the gateway reports it as
    the request's cached prompt tokens.
    """
    return {
        "finish_reason": finish.reason,
        "generated_tokens": finish.generated_tokens,
        "seed": finish.seed,
        "input_length": finish.input_length,
        "cached_tokens": finish.cached_tokens,
    }


def stream_response_json(
    event: TokenEvent, *, details: bool, generated_text: str | None = None
) -> StreamResponseJSON:
    """TGI `StreamResponse` for one token event.

    `index` is 1-based as in TGI (its router counts the prefill message it never sends for
    streams). `generated_text` and `details` are set on the last event only, `details` only when
    the request asked for them. `top_tokens` is always present (TGI omits it when empty; both
    parse the same in every client).
    """
    finish = event.finish
    return {
        "index": event.index + 1,
        "token": token_json(event.token),
        "top_tokens": [token_json(t) for t in event.top_tokens],
        "generated_text": generated_text if finish is not None else None,
        "details": stream_details_json(finish) if finish is not None and details else None,
    }


def details_json(
    finish: FinishInfo,
    tokens: Sequence[TokenInfo],
    top_tokens: Sequence[Sequence[TokenInfo]] | None,
    best_of_sequences: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """TGI `Details` of a non-streamed generation.

    `top_tokens` is omitted unless top_n_tokens was asked for, `best_of_sequences` unless
    best_of > 1, as TGI's `skip_serializing_if` does.
    """
    out: dict[str, Any] = {
        "finish_reason": finish.reason,
        "generated_tokens": finish.generated_tokens,
        "seed": finish.seed,
        "prefill": [prefill_token_json(t) for t in finish.prefill],
        "tokens": [token_json(t) for t in tokens],
        "cached_tokens": finish.cached_tokens,  # extension, as in stream details
    }
    if best_of_sequences is not None:
        out["best_of_sequences"] = best_of_sequences
    if top_tokens:
        out["top_tokens"] = [[token_json(t) for t in step] for step in top_tokens]
    return out


def best_of_sequence_json(
    generated_text: str,
    finish: FinishInfo,
    tokens: Sequence[TokenInfo],
    top_tokens: Sequence[Sequence[TokenInfo]] | None,
) -> dict[str, Any]:
    """TGI `BestOfSequence`: one of the candidates that lost to the returned one."""
    out: dict[str, Any] = {
        "generated_text": generated_text,
        "finish_reason": finish.reason,
        "generated_tokens": finish.generated_tokens,
        "seed": finish.seed,
        "prefill": [prefill_token_json(t) for t in finish.prefill],
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


def error_json(message: str, error_type: ErrorType | str) -> ErrorJSON:
    """TGI `ErrorResponse`."""
    return {"error": message, "error_type": error_type}


def simple_tokens_json(tokens: Iterable[tuple[int, str, int, int]]) -> list[SimpleTokenJSON]:
    """TGI `TokenizeResponse`: (id, text, start, stop) per token."""
    return [{"id": i, "text": t, "start": a, "stop": b} for i, t, a, b in tokens]


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON like serde_json (no spaces, non-ASCII unescaped)."""
    # backslashreplace: a lone surrogate (never expected from a tokenizer) becomes a JSON
    # \\udcXX escape instead of failing the whole response.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace")


def sse_event(obj: object) -> bytes:
    """One server-sent event as TGI (axum) frames it: `data:<json>\\n\\n`."""
    return b"data:" + dumps(obj) + b"\n\n"


SSE_KEEP_ALIVE = b":\n\n"  # axum's default keep-alive: an empty comment
