"""Single-flight coalescing: identical cacheable requests share one backend generation.

The first request (the leader) generates; requests with the same cache key that arrive while it
runs join its flight as followers and receive every event from the start, live. A follower that
leaves affects nobody; when the leader's caller leaves while followers remain, the generation
goes on for them (the gateway keeps reading the backend) and stops only when no caller is left.
A failure reaches every caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from streamgate.backends import StreamEvent
from streamgate.gateway.errors import GatewayError

__all__ = ["Flight", "FlightMeta"]


@dataclass(frozen=True)
class FlightMeta:
    """What a follower's Start says: who generates."""

    model: str
    backend: str
    pool: str
    input_tokens: int
    seed: int | None


class Flight:
    """The events of one generation so far, for any number of readers."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.meta: FlightMeta | None = None
        self.error: GatewayError | None = None
        self.done = False
        self.followers = 0
        self.on_empty: Callable[[], None] | None = None
        """Called when the last follower leaves (set once the leader's caller is gone)."""
        self._changed = asyncio.Event()

    def join(self) -> None:
        """A follower arrives."""
        self.followers += 1

    def leave(self) -> None:
        """A follower leaves (done or cancelled)."""
        self.followers -= 1
        if self.followers == 0 and self.on_empty is not None:
            self.on_empty()

    def start(self, meta: FlightMeta) -> None:
        """The backend is chosen."""
        self.meta = meta
        self._signal()

    def publish(self, events: list[StreamEvent]) -> None:
        """More events arrived."""
        self.events.extend(events)
        self._signal()

    def finish(self) -> None:
        """The last event is in."""
        self.done = True
        self._signal()

    def fail(self, error: GatewayError) -> None:
        """The generation failed: every reader gets `error`."""
        if not self.done:
            self.error = error
            self.done = True
            self._signal()

    def signal(self) -> asyncio.Event:
        """An event set at the next change: take it *before* looking at the flight, then wait
        on it, so that no change between the look and the wait is missed."""
        return self._changed

    def _signal(self) -> None:
        # Wake every waiter, then arm the event again for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
