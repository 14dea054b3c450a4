"""Stage 6, coalesce: identical cacheable requests share one backend generation (single flight),
and a cached answer is replayed the same way.

The first request (the leader) generates and publishes every batch of backend events to its
`Flight`; requests with the same cache key that arrive while it runs join it as followers and
read every event from the start, live. A follower that leaves affects nobody; when the leader's
caller leaves while followers remain, the generation goes on for them (`Flights.carry_on`) and
stops only when the last of them leaves. A failure reaches every caller.

A cached answer is a flight that has already finished: followers and hits are read by the same
`Follower`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from streamgate.cache import CachedResponse
from streamgate.gateway.pipeline.errors import GatewayError, Reason
from streamgate.tasks import cancel_and_wait
from streamgate.tgi import StreamEvent

__all__ = ["Batch", "Flight", "Flights", "Follower", "Origin", "Produced", "abandoned"]

Batch: TypeAlias = list[StreamEvent]
"""Backend events that go out in one Delta: one step, or several for a client that lags."""


@dataclass(frozen=True)
class Origin:
    """Who generates an answer: what a call's Start says."""

    model: str
    backend: str
    pool: str
    input_tokens: int
    """The prompt's token count when known before the first token (else 0)."""
    seed: int | None
    """The seed the generating request gave."""


Produced: TypeAlias = Origin | Batch
"""What an answer's source yields: its Origin first, then batches of events."""


class Flight:
    """The events of one generation so far, for any number of readers."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.origin: Origin | None = None
        """Set once the backend is certain."""
        self.error: GatewayError | None = None
        self.done = False
        self.followers = 0
        self.on_empty: Callable[[], None] | None = None
        """Called when the last follower leaves (set once the leader's caller is gone)."""
        self._changed = asyncio.Event()

    @classmethod
    def finished(cls, origin: Origin, events: Sequence[StreamEvent]) -> Flight:
        """A flight that is over."""
        flight = cls()
        flight.origin = origin
        flight.events.extend(events)
        flight.done = True
        return flight

    @classmethod
    def cached(cls, hit: CachedResponse) -> Flight:
        """A cached answer as a finished flight."""
        origin = Origin(hit.model, hit.backend, hit.pool, hit.input_tokens, hit.seed)
        return cls.finished(origin, hit.events)

    def start(self, origin: Origin) -> None:
        """The backend is certain."""
        self.origin = origin
        self._signal()

    def publish(self, events: Batch) -> None:
        """More events arrived."""
        self.events.extend(events)
        self._signal()

    def finish(self) -> None:
        """The last event is in."""
        self.done = True
        self._signal()

    def fail(self, error: GatewayError) -> None:
        """The generation failed: every reader gets `error` (no-op once finished)."""
        if not self.done:
            self.error = error
            self.done = True
            self._signal()

    def changed(self) -> asyncio.Event:
        """An event set at the next change: take it *before* looking at the flight, then wait
        on it, so that no change between the look and the wait is missed."""
        return self._changed

    def _signal(self) -> None:
        # Wake every waiter, then arm the event again for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


class Follower:
    """One caller reading a flight from its first event: its Origin, then one batch per
    original event (a replay keeps the original steps). A follower counts from construction
    until `aclose()`; a failed flight fails it (with the flight's error)."""

    def __init__(self, flight: Flight) -> None:
        self._flight = flight
        self._left = False
        flight.followers += 1

    def __aiter__(self) -> AsyncIterator[Produced]:
        return self._read()

    async def _read(self) -> AsyncIterator[Produced]:
        flight = self._flight
        while flight.origin is None and not flight.done:
            await flight.changed().wait()
        if flight.origin is None:
            raise flight.error or abandoned()
        yield flight.origin
        sent = 0
        while True:
            changed = flight.changed()
            while sent < len(flight.events):
                sent += 1
                yield [flight.events[sent - 1]]
            if flight.done:
                break
            await changed.wait()
        if flight.error is not None:
            raise dataclasses.replace(flight.error)  # each reader raises its own

    async def aclose(self) -> None:
        """Leave the flight (idempotent); the last follower to leave a carried-on generation
        stops it."""
        if self._left:
            return
        self._left = True
        flight = self._flight
        flight.followers -= 1
        if flight.followers == 0 and flight.on_empty is not None:
            flight.on_empty()


class Flights:
    """The cacheable generations under way, by cache key (one instance, from the composition
    root)."""

    def __init__(self) -> None:
        self._running: dict[bytes, Flight] = {}
        self._carried_on: set[asyncio.Task[None]] = set()

    def get(self, key: bytes) -> Flight | None:
        """The generation of `key` under way, if any."""
        return self._running.get(key)

    def lead(self, key: bytes) -> Flight:
        """A new flight for `key` that identical requests may join until `land` (or, for one
        carried on, until it ends)."""
        flight = Flight()
        self._running[key] = flight
        return flight

    def land(self, key: bytes, flight: Flight) -> None:
        """The leader's call is over: joiners get `abandoned()` if the flight did not finish
        (no-op for a flight carried on: it lands when its reader ends)."""
        if flight.on_empty is None:
            flight.fail(abandoned())
            self._forget(key, flight)

    def carry_on(
        self, key: bytes, flight: Flight, read: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Keep a generation whose first caller left going for its joiners: `read` reads the
        rest (publishing, finishing or failing the flight) and releases what the generation
        holds in its `finally`; it is cancelled when the last joiner leaves."""
        task = asyncio.create_task(read(), name="carried-on-generation")
        self._carried_on.add(task)

        def ended(task: asyncio.Task[None]) -> None:
            self._carried_on.discard(task)
            flight.fail(abandoned())  # no-op when it finished
            self._forget(key, flight)

        def cancel() -> None:
            # Only while it generates: once the flight is over the task is releasing what the
            # generation held (slot, reservation, lease), and a cancel would cut that short.
            if not flight.done:
                task.cancel()

        def stop() -> None:
            # Nobody is left: stop reading the backend. Cancelled from the loop's queue, after
            # the task's first step: a task cancelled before it started would never run its
            # `finally`, which closes the backend stream.
            asyncio.get_running_loop().call_soon(cancel)

        task.add_done_callback(ended)
        flight.on_empty = stop

    async def close(self) -> None:
        """Stop the generations carried on for joiners (shutdown)."""
        await cancel_and_wait(self._carried_on)

    def _forget(self, key: bytes, flight: Flight) -> None:
        if self._running.get(key) is flight:
            del self._running[key]


def abandoned() -> GatewayError:
    """What joiners get when the generation's first caller left before its first token."""
    return GatewayError(
        Reason.GENERATION_ABANDONED,
        "the identical request this call joined was cancelled before its first token; retry",
    )
