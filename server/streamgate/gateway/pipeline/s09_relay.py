"""Stage 9, relay: the backend stream into a bounded buffer, taken out one step per Delta.

A reader task takes events from the backend as they arrive and appends them to a buffer; the
writer (the call) takes the next event whenever it is free to send. The writer falls behind
when the oldest pending event has waited longer than `MERGE_AFTER_SECONDS` (the client reads
slower than the backend generates) or more than `MERGE_BACKLOG` events wait (the backend
outruns the gateway); from then on it takes *everything* buffered at each turn, until it has
caught up (it finds nothing to take and waits for the backend). A client that keeps up
therefore gets one Delta per backend event, written as soon as it arrives, even when the
backend sends a few dozen at once (a burst after a slow step, or several events in one read);
one that falls behind gets the pending events merged into one Delta.

The buffer is bounded: when it is full the reader stops reading (TCP pushes back on the
backend), and if the client takes nothing for `stall_timeout` seconds the backend stream is
closed (the backend drops the sequence) and `on_stall` is told, so that the call can end with
an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from streamgate.tgi import StreamEvent

__all__ = ["MERGE_AFTER_SECONDS", "MERGE_BACKLOG", "Relay", "StreamStalled"]

_YIELD_EVERY = 16
MERGE_AFTER_SECONDS = 0.025
"""An event that waited longer than this for the writer means the client (or the gateway)
reads slower than the backend generates: everything pending goes into one Delta."""
MERGE_BACKLOG = 64
"""More events than this waiting at once is more than a backend sends in a burst: the backend
outruns the gateway, whose fewer, larger messages then keep the relay's throughput. A shorter
backlog of fresh events is written one per Delta."""


class StreamStalled(Exception):
    """The client took nothing for the stall timeout while the buffer was full."""

    def __init__(self, seconds: float, buffered: int) -> None:
        super().__init__(
            f"the client read nothing for {seconds:g} s with {buffered} events pending"
        )
        self.seconds = seconds


class Relay:
    """Reads `stream` (after its already-received `first` event) into a bounded buffer.

    Use `async for batch in relay`: each batch is the next event, or every event buffered
    while the writer is behind (see the module doc). The iteration ends after the last
    event, or raises what ended the stream (`BackendError`, `StreamStalled`, or whatever else
    failed in the reader) after every event received before it. `close()` stops the reader and
    closes the backend stream; call it in a `finally` (or hand the relay to whoever reads on).

    Args:
        stream: the open backend stream.
        first: its first event, already taken (the upstream stage reads it to commit to a
            backend).
        first_at: time.monotonic() when `first` arrived.
        capacity: events buffered before the reader stops reading the backend.
        stall_timeout: seconds the reader waits for room before giving up.
        on_stall: called once if the stream stalls (from the reader task).
        on_event: called with the arrival time (time.monotonic()) of every event after `first`.
    """

    def __init__(
        self,
        stream: AsyncGenerator[StreamEvent, None],
        first: StreamEvent,
        first_at: float,
        *,
        capacity: int,
        stall_timeout: float,
        on_stall: Callable[[StreamStalled], None] | None = None,
        on_event: Callable[[float], None] | None = None,
    ) -> None:
        self._stream = stream
        self._capacity = max(capacity, 1)
        self._stall_timeout = stall_timeout
        self._on_stall = on_stall
        self._on_event = on_event
        self._buffer: deque[tuple[StreamEvent, float]] = deque([(first, first_at)])
        """Events and their arrival times (time.monotonic())."""
        self._ready = asyncio.Event()  # the buffer has events, or the stream ended
        self._ready.set()
        self._room = asyncio.Event()  # the buffer has room
        self._room.set()
        self._ended = first.final
        self._behind = False
        """The writer fell behind and has not caught up since: it takes everything pending."""
        self._error: BaseException | None = None
        self.received = 1
        """Events received from the backend so far (taken or not)."""
        self.last_arrival = first_at
        """time.monotonic() when the latest event arrived from the backend."""
        self._reader: asyncio.Task[None] | None = None
        if not self._ended:
            self._reader = asyncio.create_task(self._read(), name="relay-reader")

    async def _read(self) -> None:
        try:
            async for event in self._stream:
                self.last_arrival = time.monotonic()
                self._buffer.append((event, self.last_arrival))
                self._ready.set()
                self.received += 1
                if self._on_event is not None:
                    self._on_event(self.last_arrival)
                if len(self._buffer) % _YIELD_EVERY == 0:
                    # A fast backend's events are often all buffered already: reading them
                    # never suspends. Let the writer (and other calls) run now and then.
                    await asyncio.sleep(0)
                if len(self._buffer) >= self._capacity:
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), self._stall_timeout)
                    except TimeoutError:
                        stalled = StreamStalled(self._stall_timeout, len(self._buffer))
                        self._error = stalled
                        await self._stream.aclose()  # now: the backend drops the sequence
                        if self._on_stall is not None:
                            self._on_stall(stalled)
                        return
        except Exception as err:  # BackendError, or a bug: the writer raises it either way
            self._error = err
        finally:
            self._ended = True
            self._ready.set()

    def __aiter__(self) -> AsyncIterator[list[StreamEvent]]:
        return self

    async def __anext__(self) -> list[StreamEvent]:
        buffer = self._buffer
        if not buffer and not self._ended:
            self._behind = False  # it waits for the backend: it has caught up
            self._ready.clear()
            await self._ready.wait()
        if buffer:
            if not self._behind:
                waited = time.monotonic() - buffer[0][1]
                self._behind = waited > MERGE_AFTER_SECONDS or len(buffer) > MERGE_BACKLOG
            if self._behind:
                batch = [event for event, _ in buffer]
                buffer.clear()
            else:
                batch = [buffer.popleft()[0]]
            self._room.set()
            return batch
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    async def close(self) -> None:
        """Stop reading and close the backend stream (idempotent)."""
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            # wait() does not raise the reader's CancelledError, so a cancellation of the
            # caller itself still propagates.
            await asyncio.wait({reader})
        await self._stream.aclose()
