"""What the gateway answers, as frozen dataclasses, and their decoding from the proto messages.

A stream yields one `StreamStart`, a `StreamDelta` per model step and one `StreamEnd`;
`generate()` returns a `Generation` and `list_models()` `ModelInfo`s. Enums become lower-case
strings without their prefix ("eos_token", "miss"); an `*_UNSPECIFIED` value becomes "".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.descriptor import EnumDescriptor

from streamgate_client.v1 import generation_pb2 as pb


@dataclass(frozen=True, slots=True)
class TopToken:
    """One alternative considered at a step (`top_n_tokens`)."""

    id: int
    text: str
    logprob: float


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token (only with `tokens=True` or `top_n_tokens > 0`)."""

    id: int
    text: str
    logprob: float
    special: bool
    top_tokens: tuple[TopToken, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Timings:
    """Durations measured by the gateway, in seconds."""

    queue_seconds: float = 0.0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    gateway_overhead_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamStart:
    """First event of a stream: where the request went.

    `cache_status` is "miss", "hit", "coalesced", "bypass" or "" (unspecified).
    """

    request_id: str
    model: str
    route: str
    backend: str
    cache_status: str
    input_tokens: int
    seed: int | None


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """The text of one model step (of several when the client reads slower than it generates).

    `text` may be empty for a step that produced only part of a multi-byte character.
    """

    text: str
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Last event of a stream that finished normally.

    `finish_reason` is "length", "eos_token", "stop_sequence" or "" (unspecified).
    """

    finish_reason: str
    usage: Usage
    timings: Timings


StreamEvent: TypeAlias = StreamStart | StreamDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class Generation:
    """The result of `generate()`: the whole text and where and how it was made."""

    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    request_id: str
    route: str
    backend: str
    model: str
    cache_status: str
    seed: int | None
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A route the gateway serves (`list_models()`); pass `name` as `model=`."""

    name: str
    default: bool
    backend_models: tuple[str, ...]
    max_input_tokens: int
    max_total_tokens: int


def _enum_text(enum: EnumDescriptor, value: int, prefix: str) -> str:
    """FINISH_REASON_EOS_TOKEN -> "eos_token"; *_UNSPECIFIED -> ""; a newer value -> its number."""
    known = enum.values_by_number.get(value)
    if known is None:  # an enum value added to the proto after this client was built
        return str(value)
    return "" if known.name.endswith("_UNSPECIFIED") else known.name.removeprefix(prefix).lower()


def _token(t: pb.Token) -> Token:
    top = tuple(TopToken(x.id, x.text, x.logprob) for x in t.top_tokens)
    return Token(t.id, t.text, t.logprob, t.special, top)


def _start(s: pb.Start) -> StreamStart:
    return StreamStart(
        request_id=s.request_id,
        model=s.model,
        route=s.route,
        backend=s.backend,
        cache_status=_enum_text(pb.CacheStatus.DESCRIPTOR, s.cache_status, "CACHE_STATUS_"),
        input_tokens=s.input_tokens,
        seed=s.seed if s.HasField("seed") else None,
    )


def _end(e: pb.End) -> StreamEnd:
    u, t = e.usage, e.timings
    return StreamEnd(
        finish_reason=_enum_text(pb.FinishReason.DESCRIPTOR, e.finish_reason, "FINISH_REASON_"),
        usage=Usage(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
        timings=Timings(
            t.queue_seconds,
            t.time_to_first_token_seconds,
            t.total_seconds,
            t.gateway_overhead_seconds,
        ),
    )


def event_from_proto(response: pb.GenerateStreamResponse) -> StreamEvent | None:
    """The typed event of one stream message; None for an event this client does not know."""
    kind = response.WhichOneof("event")
    if kind == "start":
        return _start(response.start)
    if kind == "delta":
        return StreamDelta(response.delta.text, tuple(_token(t) for t in response.delta.tokens))
    if kind == "end":
        return _end(response.end)
    return None


def generation_from_proto(response: pb.GenerateResponse, headers: Mapping[str, str]) -> Generation:
    """The `Generation` of a unary `Generate` response and its initial metadata (`headers`)."""
    start, end = _start(response.start), _end(response.end)
    # The initial metadata says the same as Start; it is the fallback if Start was left empty.
    return Generation(
        text=response.text,
        finish_reason=end.finish_reason,
        usage=end.usage,
        timings=end.timings,
        request_id=start.request_id or headers.get("x-request-id", ""),
        route=start.route or headers.get("x-route", ""),
        backend=start.backend or headers.get("x-backend", ""),
        model=start.model,
        cache_status=start.cache_status or headers.get("x-cache-status", ""),
        seed=start.seed,
        tokens=tuple(_token(t) for t in response.tokens),
    )


def models_from_proto(response: pb.ListModelsResponse) -> list[ModelInfo]:
    """The `ModelInfo`s of a `ListModels` response, in the gateway's order."""
    return [
        ModelInfo(
            m.name, m.default, tuple(m.backend_models), m.max_input_tokens, m.max_total_tokens
        )
        for m in response.models
    ]
