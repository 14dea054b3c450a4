"""What the pipeline yields: the events of one generation, as plain objects.

A generation is `Start`, one `Delta` per backend step (several steps merged only when the
client reads slower than they arrive), then `End`. A transport writes them in its own message
format (gateway/messages.py builds the streamgate.v1 messages every door sends); a unary call
collects them into one `Answer` (s10_respond.collect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from streamgate.tgi import StreamEvent
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["Answer", "CacheStatus", "CacheTier", "Delta", "End", "Event", "Start", "cache_name"]

CacheStatus: TypeAlias = pb.CacheStatus.ValueType
"""The proto's enum (`pb.CACHE_STATUS_HIT`, ...): how the cache answered a call."""
CacheTier: TypeAlias = Literal["", "local", "redis"]
"""The tier a hit came from ("" for anything but a hit)."""


def cache_name(status: CacheStatus) -> str:
    """HIT, MISS, BYPASS, COALESCED, or "" (unspecified): for logs, metadata and metrics."""
    name = pb.CacheStatus.Name(status).removeprefix("CACHE_STATUS_")
    return "" if name == "UNSPECIFIED" else name


@dataclass(frozen=True, slots=True)
class Start:
    """Where the call went: sent once the backend that serves it is certain."""

    request_id: str
    model: str
    route: str
    pool: str
    backend: str
    cache_status: CacheStatus
    cache_tier: CacheTier
    input_tokens: int
    """The prompt's token count when known before the first token (else 0; End has it)."""
    seed: int | None
    """The seed the request gave."""


@dataclass(frozen=True, slots=True)
class Delta:
    """The text of one backend step (or of several, merged for a client that lags)."""

    text: str
    """The steps' text, special tokens left out (as TGI's clients do)."""
    steps: tuple[StreamEvent, ...]
    """The backend events (token, alternatives) when the request asked for tokens, else ()."""


@dataclass(frozen=True, slots=True)
class End:
    """How the generation finished, its usage and its timings (seconds)."""

    finish_reason: str
    """TGI's: `length`, `eos_token`, `stop_sequence` ("" when the backend gave none)."""
    prompt_tokens: int
    completion_tokens: int
    queue_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float
    gateway_overhead_seconds: float
    seed: int | None
    """The seed the backend reports it used (the request's, or one it drew)."""


Event: TypeAlias = Start | Delta | End


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole generation, collected from its events (the unary `Generate`)."""

    start: Start
    text: str
    steps: tuple[StreamEvent, ...]
    end: End
