"""Backend stream → client messages, with a bounded buffer between the two.

A reader task takes events from the backend as they arrive and appends them to a buffer; the
writer (the RPC handler) takes the next event whenever it is free to send, or *everything*
buffered once more than `MERGE_BACKLOG` events wait. A client that keeps up therefore gets one
Delta per backend event, written as soon as it arrives (a burst of a few events in one read
included); a client that reads slower gets the pending events merged into one Delta.

The buffer is bounded: when it is full the reader stops reading (TCP pushes back on the
backend), and if the client takes nothing for `stall_timeout` seconds the backend stream is
closed (the backend drops the sequence) and `on_stall` is told, so that the call can end with
an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from streamgate.backends import StreamEvent, TGIStream

__all__ = ["MERGE_BACKLOG", "Relay", "StreamStalled"]

_YIELD_EVERY = 16
MERGE_BACKLOG = 4
"""Events may wait this many at once and still go one per Delta; a longer backlog means the
client reads slower than the backend generates, and all of it goes into one Delta."""


class StreamStalled(Exception):
    """The client took nothing for the stall timeout while the buffer was full."""

    def __init__(self, seconds: float, buffered: int) -> None:
        super().__init__(
            f"the client read nothing for {seconds:g} s with {buffered} events pending"
        )
        self.seconds = seconds


class Relay:
    """Reads `stream` (after its already-received `first` event) into a bounded buffer.

    Use `async for batch in relay`: each batch is the next event, or every event buffered when
    more than `MERGE_BACKLOG` wait. The iteration ends after the last event, or raises what
    ended the stream (`BackendError`, `StreamStalled`, or whatever else failed in the reader)
    after every event received before it.
    `close()` stops the reader and closes the backend stream; call it in a `finally`.

    Args:
        stream: the open backend stream.
        first: its first event, already taken (the pipeline reads it to commit to a backend).
        first_at: time.monotonic() when `first` arrived.
        capacity: events buffered before the reader stops reading the backend.
        stall_timeout: seconds the reader waits for room before giving up.
        on_stall: called once if the stream stalls (from the reader task).
        on_event: called with the arrival time (time.monotonic()) of every event after `first`.
    """

    def __init__(
        self,
        stream: TGIStream,
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
        self._buffer: deque[StreamEvent] = deque([first])
        self._ready = asyncio.Event()  # the buffer has events, or the stream ended
        self._ready.set()
        self._room = asyncio.Event()  # the buffer has room
        self._room.set()
        self._ended = first.final
        self._error: BaseException | None = None
        self.last_arrival = first_at
        """time.monotonic() when the latest event arrived from the backend."""
        self._reader: asyncio.Task[None] | None = None
        if not self._ended:
            self._reader = asyncio.create_task(self._read(), name="relay-reader")

    async def _read(self) -> None:
        try:
            async for event in self._stream:
                self._buffer.append(event)
                self._ready.set()
                self.last_arrival = time.monotonic()
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
                        self._stream.close()  # now: the backend drops the sequence
                        if self._on_stall is not None:
                            self._on_stall(stalled)
                        return
        except Exception as err:  # BackendError, or a bug: the writer raises it either way
            self._error = err
        finally:
            self._ended = True
            self._ready.set()

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> list[StreamEvent]:
        if not self._buffer and not self._ended:
            self._ready.clear()
            await self._ready.wait()
        if self._buffer:
            if len(self._buffer) <= MERGE_BACKLOG:
                # A short backlog is a burst (several events in one read), not a slow client:
                # one step per Delta still.
                batch = [self._buffer.popleft()]
            else:
                batch = list(self._buffer)
                self._buffer.clear()
            self._room.set()
            return batch
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    async def close(self) -> None:
        """Stop reading and close the backend stream (idempotent)."""
        self._stream.close()
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            # wait() does not raise the reader's CancelledError, so a cancellation of the
            # caller itself still propagates.
            await asyncio.wait({reader})
