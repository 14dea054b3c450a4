"""Single-flight coalescing: identical cacheable requests share one backend generation.

The first request (the leader) generates; requests with the same cache key that arrive while it
runs join its flight as followers and receive every event from the start, live. A follower that
leaves affects nobody; when the leader's caller leaves while followers remain, the generation
goes on for them (the gateway keeps reading the backend) and stops only when no caller is left.
A failure reaches every caller.

A cached answer is replayed as a flight that has already finished: the same code writes both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from streamgate.backends import StreamEvent
from streamgate.gateway.errors import GatewayError, Reason
from streamgate.tasks import cancel_and_wait

__all__ = ["Flight", "FlightMeta", "Flights", "abandoned"]

_T = TypeVar("_T")


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
        """Set once the backend is chosen."""
        self.error: GatewayError | None = None
        self.done = False
        self.followers = 0
        self.on_empty: Callable[[], None] | None = None
        """Called when the last follower leaves (set once the leader's caller is gone)."""
        self._changed = asyncio.Event()

    @classmethod
    def finished(cls, meta: FlightMeta, events: Sequence[StreamEvent]) -> Flight:
        """A flight that is over (a cached answer)."""
        flight = cls()
        flight.meta = meta
        flight.events.extend(events)
        flight.done = True
        return flight

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


class Flights:
    """The cacheable generations under way, by cache key."""

    def __init__(self) -> None:
        self._running: dict[bytes, Flight] = {}
        self._carried_on: set[asyncio.Task[None]] = set()

    def get(self, key: bytes) -> Flight | None:
        """The generation of `key` under way, if any."""
        return self._running.get(key)

    async def lead(self, key: bytes, run: Callable[[Flight], Awaitable[_T]]) -> _T:
        """Run a generation that identical requests may join while it runs: `run` publishes
        to the flight it gets. Its failure reaches the joiners."""
        flight = Flight()
        self._running[key] = flight
        try:
            return await run(flight)
        except GatewayError as err:
            flight.fail(err)
            raise
        finally:
            if flight.on_empty is None:  # not carried on for joiners
                flight.fail(abandoned())  # no-op when it finished
                self._forget(key, flight)

    def carry_on(
        self,
        key: bytes,
        flight: Flight,
        read: Callable[[], Coroutine[Any, Any, None]],
        on_end: Callable[[], None],
    ) -> asyncio.Task[None]:
        """Keep a generation whose first caller left going for its joiners: `read` reads the
        rest (publishing, finishing or failing the flight); it is cancelled when the last joiner
        leaves. `on_end` runs when it ends, however. The task is the first caller's handoff."""
        task = asyncio.create_task(read(), name="carried-on-generation")
        self._carried_on.add(task)

        def ended(task: asyncio.Task[None]) -> None:
            # Here, not in read(): a task cancelled before it started never runs its body.
            self._carried_on.discard(task)
            on_end()
            flight.fail(abandoned())  # no-op when it finished
            self._forget(key, flight)

        task.add_done_callback(ended)

        def stop() -> None:
            task.cancel()  # nobody is left: stop reading the backend

        flight.on_empty = stop
        return task

    async def close(self) -> None:
        """Stop the generations carried on for joiners (shutdown)."""
        await cancel_and_wait(self._carried_on)

    def _forget(self, key: bytes, flight: Flight) -> None:
        if self._running.get(key) is flight:
            del self._running[key]


def abandoned() -> GatewayError:
    """What joiners get when the generation's first caller left before its first token."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.GENERATION_ABANDONED,
        "the identical request this call joined was cancelled before its first token; retry",
    )
