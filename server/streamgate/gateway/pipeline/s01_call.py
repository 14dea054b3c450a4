"""Stage 1, the call: who is asking, until when, with which metadata; and what happened to it.

A transport reads its metadata (gRPC's invocation metadata, HTTP headers) into a `Call` once,
at the start. Each stage's result is recorded on `Call.record` as the call goes, and the finish
stage derives the call's log line and metrics from that record alone.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamgate.gateway.pipeline.errors import GatewayError, internal_error
from streamgate.gateway.pipeline.events import CacheStatus, CacheTier, End
from streamgate.tenancy import Caller
from streamgate_client.v1 import generation_pb2 as pb

if TYPE_CHECKING:
    from streamgate.gateway.pipeline.s04_choose import Choice
    from streamgate.gateway.pipeline.s06_coalesce import Origin
    from streamgate.gateway.pipeline.s07_admit import Admission
    from streamgate.gateway.pipeline.s10_respond import Delivery
    from streamgate.routing import Route

__all__ = ["Call", "CallRecord", "UpstreamRecord"]

# A caller's id is echoed in logs and headers: keep it short and printable.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Metadata the pipeline reads itself; other `x-*` keys are free labels (logs, routing rules).
_KNOWN_KEYS = frozenset({"x-request-id", "x-route", "x-priority"})


@dataclass
class UpstreamRecord:
    """What the upstream stage learned: how many backends it tried, and the backend's time."""

    attempts: int
    backend_seconds: float
    """From sending the request to the backend's last event so far, plus failed attempts: the
    rest of the call's time is the gateway's overhead."""


@dataclass
class CallRecord:
    """The results of a call's stages, each set in one place as the call goes (None: the call
    ended before that stage): the orchestrator's own stages (route, choice, cache), the
    generation the call leads (admission, upstream), and its answer (origin, delivery, end)."""

    route: Route | None = None
    choice: Choice | None = None
    cache: CacheStatus = pb.CACHE_STATUS_UNSPECIFIED
    cache_tier: CacheTier = ""
    admission: Admission | None = None
    upstream: UpstreamRecord | None = None
    origin: Origin | None = None
    """Who generated the answer (the call's Start)."""
    delivery: Delivery | None = None
    end: End | None = None


@dataclass(eq=False)
class Call:
    """One call to the gateway (see the module doc); identity semantics."""

    request_id: str
    method: str
    peer: str
    started: float
    """time.monotonic() at the start of the call."""
    deadline: float | None
    """time.monotonic() at which the caller's deadline passes (None: no deadline)."""
    streaming: bool = False
    """The client receives the answer as it comes (GenerateStream), not at the end."""
    route_hint: str = ""
    """`x-route` metadata: the route when the request's `model` is empty."""
    priority_hint: str = ""
    """`x-priority` metadata (used only when the tenant allows it)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Other `x-*` metadata: logged, and routing rules may look at them."""
    caller: Caller | None = None
    """The tenant (and key) once authenticated."""
    record: CallRecord = field(default_factory=CallRecord)
    trailing: list[tuple[str, str]] = field(default_factory=list)
    """Trailing metadata to send whatever the status (the caller's remaining quota)."""
    interruption: GatewayError | None = None
    """Why the gateway interrupted the call (shutdown, a stalled client); None: it did not."""
    task: asyncio.Task[object] | None = None
    """The task that runs the call's handler (set by the transport; `interrupt` cancels it)."""
    finishing: bool = False
    """The transport is sending the call's final status: too late to interrupt."""

    @classmethod
    def start(
        cls,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]],
        *,
        peer: str,
        time_remaining: float | None,
        streaming: bool = False,
    ) -> Call:
        """A call from its metadata (keys in any case; binary values are ignored)."""
        now = time.monotonic()
        text: dict[str, str] = {}
        for key, value in metadata:
            if isinstance(value, str):  # `-bin` keys carry bytes: not labels
                text.setdefault(key.lower(), value)
        request_id = text.get("x-request-id", "")
        if not _REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        return cls(
            request_id=request_id,
            method=method,
            peer=peer,
            started=now,
            deadline=None if time_remaining is None else now + time_remaining,
            streaming=streaming,
            route_hint=text.get("x-route", ""),
            priority_hint=text.get("x-priority", ""),
            labels={k: v for k, v in text.items() if k.startswith("x-") and k not in _KNOWN_KEYS},
        )

    @property
    def authenticated(self) -> Caller:
        """The caller; the transport authenticates every call before its handler runs."""
        if self.caller is None:
            raise internal_error("the call was not authenticated")
        return self.caller

    def interrupt(self, error: GatewayError) -> None:
        """End the call with `error`: cancels its handler wherever it waits (a write to a
        client that reads nothing included); the transport answers with `error`."""
        task = self.task
        if self.interruption is None and not self.finishing and task and not task.done():
            self.interruption = error
            task.cancel()

    def tokens_sent(self) -> int:
        """Tokens the client has received: what a stream delivered so far; nothing for a call
        answered at the end."""
        delivery = self.record.delivery
        return delivery.tokens if self.streaming and delivery is not None else 0

    def remaining(self) -> float | None:
        """Seconds left until the deadline (None: no deadline; may be <= 0)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def deadline_passed(self) -> bool:
        """The caller's deadline is over (with a millisecond of slack for early timers)."""
        return self.deadline is not None and time.monotonic() >= self.deadline - 1e-3

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started
