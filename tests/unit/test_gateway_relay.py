"""The relay between a backend stream and the client: per-step, merged, bounded, stalled."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamgate.backends import BackendError, StreamDetails, StreamEvent, Token
from streamgate.gateway.relay import MERGE_BACKLOG, Relay, StreamStalled


def event(i: int, final: bool = False) -> StreamEvent:
    details = StreamDetails("length", i + 1, 3, None) if final else None
    return StreamEvent(
        index=i + 1,
        token=Token(i, f"t{i} ", -0.5, False),
        generated_text="..." if final else None,
        details=details,
    )


def events(n: int) -> list[StreamEvent]:
    return [event(i, final=i == n - 1) for i in range(n)]


class FakeStream:
    """Stands in for TGIStream: yields events (after the first), optionally gated, then an
    optional error; counts what the reader pulled."""

    def __init__(
        self, items: list[StreamEvent], error: BackendError | None = None, gated: bool = False
    ) -> None:
        self.items = items[1:]
        self.error = error
        self.pulled = 0
        self.closed = False
        self.gate: asyncio.Queue[None] | None = asyncio.Queue() if gated else None

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self.gate is not None:
            await self.gate.get()
        if self.closed:
            raise StopAsyncIteration
        if self.pulled < len(self.items):
            self.pulled += 1
            return self.items[self.pulled - 1]
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    def close(self) -> None:
        self.closed = True


def relay(stream: FakeStream, first: StreamEvent, **kw: object) -> Relay:
    options: dict[str, object] = {"capacity": 64, "stall_timeout": 30.0, **kw}
    return Relay(stream, first, time.monotonic(), **options)  # type: ignore[arg-type]


async def until(predicate: object, what: str) -> None:
    for _ in range(2000):  # a bound, not a timing assertion
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.001)
    pytest.fail(f"timed out waiting for {what}")


async def test_a_reader_that_keeps_up_gets_one_batch_per_event() -> None:
    items = events(5)
    stream = FakeStream(items, gated=True)
    r = relay(stream, items[0])
    assert stream.gate is not None
    batches = [await anext(r)]
    for _ in range(4):
        stream.gate.put_nowait(None)  # the backend produces one more event
        batches.append(await anext(r))
    stream.gate.put_nowait(None)
    with pytest.raises(StopAsyncIteration):
        await anext(r)
    assert [len(b) for b in batches] == [1, 1, 1, 1, 1]
    assert [b[0] for b in batches] == items
    await r.close()


async def test_a_short_burst_still_goes_one_event_per_batch() -> None:
    # Several events often arrive in one TCP chunk: a writer that keeps up still gets them
    # one by one.
    items = events(4)
    stream = FakeStream(items, gated=True)
    r = relay(stream, items[0])
    assert stream.gate is not None
    assert await anext(r) == items[:1]
    waiting = asyncio.ensure_future(anext(r))
    await asyncio.sleep(0)  # the writer now waits for the backend
    for _ in range(4):
        stream.gate.put_nowait(None)  # three events and the end, all at once
    batches = [await waiting] + [b async for b in r]
    assert batches == [[items[1]], [items[2]], [items[3]]]
    await r.close()


async def test_pending_events_are_merged_when_the_reader_is_behind() -> None:
    assert MERGE_BACKLOG < 9
    items = events(10)
    stream = FakeStream(items)
    r = relay(stream, items[0])
    await until(lambda: stream.pulled == 9, "the reader task to read everything")
    batches = [batch async for batch in r]
    assert [len(b) for b in batches] == [10]
    assert batches[0] == items
    await r.close()


async def test_the_buffer_is_bounded() -> None:
    items = events(100)
    stream = FakeStream(items)
    r = relay(stream, items[0], capacity=8)
    await until(lambda: stream.pulled == 7, "the buffer to fill")
    for _ in range(20):
        await asyncio.sleep(0)
    assert stream.pulled == 7  # 1 + 7 buffered: the reader waits for room
    first = await anext(r)
    assert len(first) == 8
    await until(lambda: stream.pulled == 15, "the next eight")
    got = sum(len(b) for b in [first] + [b async for b in r])
    assert got == 100
    await r.close()


async def test_a_stalled_client_closes_the_backend_stream() -> None:
    items = events(100)
    stream = FakeStream(items)
    stalls: list[StreamStalled] = []
    r = relay(stream, items[0], capacity=8, stall_timeout=0.01, on_stall=stalls.append)
    await until(lambda: stalls, "the stall")
    assert stream.closed
    assert "read nothing for 0.01 s" in str(stalls[0])
    # What was buffered is still delivered, then the stall is raised.
    assert len(await anext(r)) == 8
    with pytest.raises(StreamStalled):
        await anext(r)
    await r.close()


async def test_a_backend_error_comes_after_the_events_before_it() -> None:
    items = events(4)[:3]  # no final event
    error = BackendError("generation", "boom", tokens_received=3, backend="b", retryable=False)
    stream = FakeStream(items, error=error)
    r = relay(stream, items[0])
    await until(lambda: stream.pulled == 2, "the events")
    assert [await anext(r) for _ in range(3)] == [[item] for item in items]
    with pytest.raises(BackendError, match="boom"):
        await anext(r)
    await r.close()


async def test_close_stops_the_reader_and_the_stream() -> None:
    items = events(3)
    stream = FakeStream(items, gated=True)
    r = relay(stream, items[0])
    assert await anext(r) == items[:1]
    await r.close()
    assert stream.closed


async def test_a_single_final_event_needs_no_reader() -> None:
    [only] = events(1)
    stream = FakeStream([only])
    r = relay(stream, only)
    assert [b async for b in r] == [[only]]
    await r.close()


async def test_arrival_times_are_reported() -> None:
    items = events(3)
    stream = FakeStream(items)
    arrivals: list[float] = []
    r = relay(stream, items[0], on_event=arrivals.append)
    assert sum(len(b) for b in [b async for b in r]) == 3
    assert len(arrivals) == 2 and arrivals == sorted(arrivals)
    assert r.last_arrival == arrivals[-1]
    await r.close()
