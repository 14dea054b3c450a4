"""The relay between a backend stream and the client: per-step, merged only for a client that
lags, bounded, stalled.

Whether events are merged depends on how long the oldest of them waited (MERGE_AFTER_SECONDS)
and on how many wait (MERGE_BACKLOG), so the tests that are about merging run the relay on a
clock they move by hand (`clock`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from types import SimpleNamespace

import pytest

from streamgate.backends import BackendError, StreamEvent
from streamgate.gateway.pipeline import s09_relay
from streamgate.gateway.pipeline.s09_relay import (
    MERGE_AFTER_SECONDS,
    MERGE_BACKLOG,
    Relay,
    StreamStalled,
)
from support.events import token_events as events
from support.processes import wait_until


class Backend:
    """A backend stream (`stream`, an async generator, as the adapter's): its first event at
    once, then the others, optionally each only when the test releases it (`gate`), then an
    optional error. Counts the events pulled after the first, and whether the stream was
    closed before its end."""

    def __init__(
        self, items: list[StreamEvent], error: BackendError | None = None, gated: bool = False
    ) -> None:
        self.first = items[0]
        self.items = items[1:]
        self.error = error
        self.pulled = 0
        self.closed = False
        self.gate: asyncio.Queue[None] | None = asyncio.Queue() if gated else None
        self.stream = self._generate()

    def release(self, n: int = 1) -> None:
        """Let the backend produce `n` more events (or its end)."""
        assert self.gate is not None
        for _ in range(n):
            self.gate.put_nowait(None)

    async def _generate(self) -> AsyncGenerator[StreamEvent, None]:
        try:
            yield self.first
            for item in self.items:
                if self.gate is not None:
                    await self.gate.get()
                self.pulled += 1
                yield item
            if self.gate is not None:
                await self.gate.get()
            if self.error is not None:
                raise self.error
        except (GeneratorExit, asyncio.CancelledError):
            self.closed = True
            raise


class Clock:
    """time.monotonic() of the relay module, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def lag(self) -> None:
        """Time passes: every event buffered now has waited longer than MERGE_AFTER_SECONDS."""
        self.now += MERGE_AFTER_SECONDS * 2


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The relay's clock, frozen until the test moves it."""
    fake = Clock()
    monkeypatch.setattr(s09_relay, "time", SimpleNamespace(monotonic=fake))
    return fake


async def relay(
    backend: Backend, clock: Callable[[], float] = time.monotonic, **kw: object
) -> Relay:
    """A relay of `backend`'s stream, whose first event was taken (as the upstream stage does)
    at `clock()` (the relay's clock: `Clock` in the tests about merging)."""
    first = await anext(backend.stream)
    options: dict[str, object] = {"capacity": 64, "stall_timeout": 30.0, **kw}
    return Relay(backend.stream, first, clock(), **options)  # type: ignore[arg-type]


async def test_a_reader_that_keeps_up_gets_one_batch_per_event(clock: Clock) -> None:
    items = events(5)
    backend = Backend(items, gated=True)
    r = await relay(backend, clock)
    batches = [await anext(r)]
    for _ in range(4):
        backend.release()  # the backend produces one more event
        batches.append(await anext(r))
    backend.release()
    with pytest.raises(StopAsyncIteration):
        await anext(r)
    assert [len(b) for b in batches] == [1, 1, 1, 1, 1]
    assert [b[0] for b in batches] == items
    assert r.received == 5
    await r.close()


async def test_a_short_burst_still_goes_one_event_per_batch(clock: Clock) -> None:
    # Several events often arrive in one TCP chunk: a writer that keeps up still gets them
    # one by one.
    items = events(4)
    backend = Backend(items, gated=True)
    r = await relay(backend, clock)
    assert await anext(r) == items[:1]
    waiting = asyncio.ensure_future(anext(r))
    await asyncio.sleep(0)  # the writer now waits for the backend
    backend.release(4)  # three events and the end, all at once
    batches = [await waiting] + [b async for b in r]
    assert batches == [[items[1]], [items[2]], [items[3]]]
    await r.close()


async def test_a_burst_is_not_merged_for_a_reader_that_keeps_up(clock: Clock) -> None:
    # The whole stream is buffered before the writer takes anything (a backend that sent it
    # all at once), but none of it waited: one event per batch, however many are pending.
    items = events(10)
    backend = Backend(items)
    r = await relay(backend, clock)
    await wait_until(lambda: backend.pulled == 9, "the reader task to read everything")
    batches = [batch async for batch in r]
    assert batches == [[item] for item in items]
    assert r.received == 10
    await r.close()


async def test_a_backlog_longer_than_a_burst_is_merged_however_fresh(clock: Clock) -> None:
    # More fresh events than a burst: the backend outruns the gateway (its writes, not the
    # client): the backlog goes out at once, then single events again.
    items = events(MERGE_BACKLOG + 2)
    backend = Backend(items)
    r = await relay(backend, clock, capacity=len(items))
    await wait_until(lambda: backend.pulled == len(items) - 1, "the reader to read everything")
    batches = [batch async for batch in r]
    assert [len(b) for b in batches] == [len(items)]
    await r.close()


async def test_pending_events_are_merged_when_the_reader_lags(clock: Clock) -> None:
    items = events(10)
    backend = Backend(items)
    r = await relay(backend, clock)
    await wait_until(lambda: backend.pulled == 9, "the reader task to read everything")
    clock.lag()  # the client took nothing for longer than MERGE_AFTER_SECONDS
    batches = [batch async for batch in r]
    assert [len(b) for b in batches] == [10]
    assert batches[0] == items
    assert r.received == 10
    await r.close()


async def test_an_event_that_waited_exactly_the_merge_age_is_not_merged(clock: Clock) -> None:
    items = events(3)
    backend = Backend(items)
    r = await relay(backend, clock)
    await wait_until(lambda: backend.pulled == 2, "the reader task to read everything")
    clock.now += MERGE_AFTER_SECONDS
    assert [batch async for batch in r] == [[item] for item in items]
    await r.close()


async def test_a_reader_that_catches_up_gets_single_events_again(clock: Clock) -> None:
    items = events(6)
    backend = Backend(items, gated=True)
    r = await relay(backend, clock)
    backend.release(2)
    await wait_until(lambda: backend.pulled == 2, "two more events")
    clock.lag()
    assert await anext(r) == items[:3]  # it lagged: everything pending at once
    backend.release(2)  # more arrives before it is back: still behind, still merged
    await wait_until(lambda: backend.pulled == 4, "two more")
    assert await anext(r) == items[3:5]
    # Caught up: it waits for the backend, and the next event goes alone.
    waiting = asyncio.ensure_future(anext(r))
    await asyncio.sleep(0)
    backend.release()
    assert await waiting == [items[5]]
    backend.release()
    assert [b async for b in r] == []
    await r.close()


async def test_the_buffer_is_bounded(clock: Clock) -> None:
    items = events(100)
    backend = Backend(items)
    r = await relay(backend, clock, capacity=8)
    await wait_until(lambda: backend.pulled == 7, "the buffer to fill")
    for _ in range(20):
        await asyncio.sleep(0)
    assert backend.pulled == 7  # 1 + 7 buffered: the reader waits for room
    clock.lag()
    first = await anext(r)
    assert len(first) == 8  # the client was behind: all eight at once, and room for eight
    await wait_until(lambda: backend.pulled == 15, "the next eight")
    got = sum(len(b) for b in [first] + [b async for b in r])
    assert got == 100
    assert r.received == 100
    await r.close()


async def test_a_stalled_client_closes_the_backend_stream(clock: Clock) -> None:
    items = events(100)
    backend = Backend(items)
    stalls: list[StreamStalled] = []
    r = await relay(backend, clock, capacity=8, stall_timeout=0.01, on_stall=stalls.append)
    await wait_until(lambda: stalls, "the stall")
    assert backend.closed
    assert "read nothing for 0.01 s" in str(stalls[0])
    # What was buffered is still delivered (in one batch: the client lagged), then the stall.
    clock.lag()
    assert len(await anext(r)) == 8
    with pytest.raises(StreamStalled):
        await anext(r)
    await r.close()


async def test_a_backend_error_comes_after_the_events_before_it(clock: Clock) -> None:
    items = events(4)[:3]  # no final event
    error = BackendError("generation", "boom", tokens_received=3, backend="b", retryable=False)
    backend = Backend(items, error=error)
    r = await relay(backend, clock)
    await wait_until(lambda: backend.pulled == 2, "the events")
    assert [await anext(r) for _ in range(3)] == [[item] for item in items]
    with pytest.raises(BackendError, match="boom"):
        await anext(r)
    await r.close()


async def test_close_stops_the_reader_and_the_stream() -> None:
    items = events(3)
    backend = Backend(items, gated=True)
    r = await relay(backend)
    assert await anext(r) == items[:1]
    await r.close()
    assert backend.closed
    await r.close()  # idempotent


async def test_a_single_final_event_needs_no_reader() -> None:
    [only] = events(1)
    backend = Backend([only])
    r = await relay(backend)
    assert [b async for b in r] == [[only]]
    assert r.received == 1
    await r.close()


async def test_arrival_times_are_reported() -> None:
    items = events(3)
    backend = Backend(items)
    arrivals: list[float] = []
    r = await relay(backend, on_event=arrivals.append)
    assert sum(len(b) for b in [b async for b in r]) == 3
    assert len(arrivals) == 2 and arrivals == sorted(arrivals)
    assert r.last_arrival == arrivals[-1]
    assert arrivals[0] <= time.monotonic()
    await r.close()
