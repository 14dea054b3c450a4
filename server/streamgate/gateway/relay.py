"""Backend stream → client messages, with a bounded buffer between the two.

A reader task takes events from the backend as they arrive and appends them to a buffer; the
writer (the RPC handler) takes *everything* buffered whenever it is free to send. A client that
keeps up therefore gets one Delta per backend event, written as soon as it arrives; a client
that reads slower gets the pending events merged into one Delta. The buffer is bounded: when it
is full the reader stops reading (TCP pushes back on the backend), and if the client takes
nothing for `stall_timeout` seconds the backend stream is closed (the backend drops the sequence)
and `on_stall` is told, so that the call can end with an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from streamgate.backends import StreamEvent, TGIStream

__all__ = ["Relay", "StreamStalled"]


class StreamStalled(Exception):
    """The client took nothing for the stall timeout while the buffer was full."""

    def __init__(self, seconds: float, buffered: int) -> None:
        super().__init__(
            f"the client read nothing for {seconds:g} s with {buffered} events pending"
        )
        self.seconds = seconds


class Relay:
    """Reads `stream` (after its already-received `first` event) into a bounded buffer.

    Use `async for batch in relay`: each batch is every event buffered since the last one
    (at least one). The iteration ends after the last event, or raises the `BackendError` (or
    `StreamStalled`, or whatever else failed in the reader) that ended the stream — after every event received before it.
    `close()` stops the reader and closes the backend stream; call it in a `finally`.

    Args:
        stream: the open backend stream.
        first: its first event, already taken (the pipeline reads it to commit to a backend).
        capacity: events buffered before the reader stops reading the backend.
        stall_timeout: seconds the reader waits for room before giving up.
        on_stall: called once if the stream stalls (from the reader task).
        on_event: called with the arrival time of every event after `first` (inter-token
            latency).
    """

    def __init__(
        self,
        stream: TGIStream,
        first: StreamEvent,
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
        self.backend_wait = 0.0
        """Seconds the writer waited for the backend (nothing buffered, stream still open)."""
        self._reader: asyncio.Task[None] | None = None
        if not self._ended:
            self._reader = asyncio.create_task(self._read(), name="relay-reader")

    async def _read(self) -> None:
        try:
            async for event in self._stream:
                self._buffer.append(event)
                self._ready.set()
                if self._on_event is not None:
                    self._on_event(time.monotonic())
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
            waited = time.monotonic()
            self._ready.clear()
            await self._ready.wait()
            self.backend_wait += time.monotonic() - waited
        if self._buffer:
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
