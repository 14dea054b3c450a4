"""The request context: who is asking, until when, and what happened (for logs and metrics)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from streamgate.tenancy import Caller

__all__ = ["RequestContext", "RequestStats"]

# A caller's id is echoed in logs and headers: keep it short and printable.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Metadata the pipeline reads itself; other `x-*` keys are free labels (for logs and, later,
# routing rules).
_KNOWN_KEYS = frozenset({"x-request-id", "x-route", "x-priority"})


@dataclass
class RequestStats:
    """What happened to one request; filled in as the pipeline runs."""

    route: str = ""
    rule: str = ""
    """The routing rule that chose the pool ("" : the route's own target)."""
    pool: str = ""
    backend: str = ""
    model: str = ""
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    """Tokens delivered to the client (written in Deltas)."""
    finish_reason: str = ""
    tenant: str = ""
    key: str = ""
    """The API key's name (`tenant/name`), never the key."""
    queue_seconds: float = 0.0
    """Time spent waiting for an upstream slot."""
    received_tokens: int = 0
    """Tokens received from the backend (delivered or not: a cancelled stream's too)."""
    first_token_at: float | None = None
    """time.monotonic() when the first Delta was handed to gRPC."""
    backend_wait: float = 0.0
    """Seconds that were the backend's: from sending the request to its last event (and failed
    attempts). The rest of the call's time is the gateway's overhead."""
    cache: str = ""
    """HIT, MISS, BYPASS or COALESCED."""
    cache_tier: str = ""
    """The tier a HIT came from (local or redis)."""
    merged_events: int = 0
    """Backend events that shared a Delta with another (the client was reading slower)."""


@dataclass
class RequestContext:
    """Per-call facts taken from gRPC once, at the start of the call."""

    request_id: str
    method: str
    peer: str
    started: float
    """time.monotonic() at the start of the call."""
    deadline: float | None
    """time.monotonic() at which the caller's deadline passes (None: no deadline)."""
    route_hint: str = ""
    """`x-route` metadata: the route when the request's `model` is empty."""
    authorization: str = field(default="", repr=False)
    """`authorization` metadata (holds the API key: never logged)."""
    priority_hint: str = ""
    """`x-priority` metadata (used only when the tenant allows it)."""
    labels: dict[str, str] = field(default_factory=dict)
    caller: Caller | None = None
    """The tenant (and key) once authenticated."""
    priority: int = 0
    """Its place in the admission queue (the tenant's, or `x-priority`)."""
    stats: RequestStats = field(default_factory=RequestStats)
    trailing: list[tuple[str, str]] = field(default_factory=list)
    """Trailing metadata of the call, whatever its status (remaining quota)."""
    handoff: asyncio.Task[None] | None = None
    """The call's generation, going on for coalesced callers after the call itself ended: the
    call's upstream slot and quota reservation are released when it ends."""

    @classmethod
    def from_grpc(cls, context: grpc.aio.ServicerContext[Any, Any], method: str) -> RequestContext:
        """Read request id, labels and deadline from the call."""
        now = time.monotonic()
        metadata = _text_metadata(context.invocation_metadata() or ())
        request_id = metadata.get("x-request-id", "")
        if not _REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        remaining = context.time_remaining()
        labels = {k: v for k, v in metadata.items() if k.startswith("x-") and k not in _KNOWN_KEYS}
        return cls(
            request_id=request_id,
            method=method,
            peer=context.peer() or "",
            started=now,
            deadline=None if remaining is None else now + remaining,
            route_hint=metadata.get("x-route", ""),
            authorization=metadata.get("authorization", ""),
            priority_hint=metadata.get("x-priority", ""),
            labels=labels,
        )

    def remaining(self) -> float | None:
        """Seconds left until the deadline (None: no deadline; may be <= 0)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def deadline_passed(self) -> bool:
        """The caller's deadline is over (with a millisecond of slack for early timers)."""
        return self.deadline is not None and time.monotonic() >= self.deadline - 1e-3

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started


def _text_metadata(items: Iterable[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, value = item[0], item[1]
        if isinstance(value, str):  # `-bin` keys carry bytes: not labels
            out.setdefault(key.lower(), value)
    return out
