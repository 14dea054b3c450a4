"""The admission queue: a bound on upstream streams, with a priority queue in front of it.

At most `max_active` requests hold a slot; others wait, highest priority first and first come
first served within a priority, up to `max_queued` of them and for at most `max_wait` seconds
(or the caller's deadline). A freed slot is handed straight to the best waiter, so a newcomer
never overtakes the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AdmissionQueue", "QueueFull", "QueueTimeout", "Slot"]

_EMA_WEIGHT = 0.2  # of the newest hold time in the moving average
_MIN_RETRY = 0.05
_COMPACT_SLACK = 64  # departed waiters tolerated in the heap before it is rebuilt


class QueueFull(Exception):
    """`max_queued` requests are waiting already."""

    def __init__(self, queued: int, retry_after: float) -> None:
        super().__init__(f"{queued} requests are waiting")
        self.queued = queued
        self.retry_after = retry_after


class QueueTimeout(Exception):
    """No slot within the wait bound."""

    def __init__(self, waited: float, retry_after: float) -> None:
        super().__init__(f"no slot within {waited:.3f} s")
        self.waited = waited
        self.retry_after = retry_after


class Slot:
    """A granted place among the active streams; `release()` is idempotent (use it in a
    `finally`)."""

    def __init__(self, queue: AdmissionQueue, waited: float) -> None:
        self._queue = queue
        self._held_from = queue._clock()
        self.waited = waited
        """Seconds spent queued (0.0 when granted at once)."""
        self._released = False

    def release(self) -> None:
        """Give the slot back (to the best waiter, if any)."""
        if self._released:
            return
        self._released = True
        self._queue._release(self._queue._clock() - self._held_from)


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int]
    """(-priority, arrival): the smallest is served first."""
    future: asyncio.Future[None] = field(compare=False)
    """Gets the slot (a result), or is cancelled when the waiter leaves: a done future found
    in the heap is skipped."""


class AdmissionQueue:
    """At most `max_active` slots at once; up to `max_queued` requests wait, highest priority
    first, FIFO within a priority (see the module doc)."""

    def __init__(
        self,
        max_active: int,
        max_queued: int,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_active = max_active
        self.max_queued = max_queued
        self.max_wait = max_wait
        self._clock = clock
        self._active = 0
        self._queued = 0
        self._heap: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._mean_hold: float | None = None

    @property
    def active(self) -> int:
        """Slots held now (a slot being handed to a waiter counts as held)."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return self._queued

    def retry_after(self) -> float:
        """A hint for RetryInfo: roughly when a slot frees for a newcomer (the mean hold time
        times the waiters ahead per slot, within [0.05, max_wait]; 1.0 before any release)."""
        if self._mean_hold is None:
            return 1.0
        wait = self._mean_hold * (self._queued + 1) / self.max_active
        return min(max(wait, _MIN_RETRY), self.max_wait)

    async def acquire(self, priority: int, deadline_in: float | None = None) -> Slot:
        """A slot, at once (one is free and nobody waits) or after waiting. `deadline_in`:
        seconds left of the caller's deadline (the wait ends at the earlier of it and
        `max_wait`).

        Raises QueueFull at once, QueueTimeout when the wait ends; a cancelled wait leaves the
        queue at once and holds nothing.
        """
        # A free slot means nobody is waiting for it: a release hands its slot to the best
        # live waiter first. (`queued` may still count a cancelled waiter that has not run yet,
        # so it is not the test.)
        if self._active < self.max_active:
            self._active += 1
            return Slot(self, 0.0)
        if self._queued >= self.max_queued:
            raise QueueFull(self._queued, self.retry_after())
        bound = self.max_wait if deadline_in is None else max(min(self.max_wait, deadline_in), 0)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Waiter((-priority, next(self._arrivals)), future))
        self._queued += 1
        started = self._clock()
        try:
            # Not wait_for(): it returns the result when cancelled after the slot arrived,
            # which would swallow the caller's cancellation.
            async with asyncio.timeout(bound):
                await future
        except BaseException as err:
            if future.done() and not future.cancelled():
                # The slot was handed over just as the wait ended: pass it on.
                self._release(None)
            else:
                future.cancel()
                self._queued -= 1
                self._compact()
            if isinstance(err, TimeoutError):
                raise QueueTimeout(self._clock() - started, self.retry_after()) from None
            raise
        return Slot(self, self._clock() - started)

    def _compact(self) -> None:
        """Drop departed waiters once they outnumber the live ones: one deep in the heap (a low
        priority under steady higher-priority traffic) may never reach the top."""
        if len(self._heap) > 2 * self._queued + _COMPACT_SLACK:
            self._heap = [w for w in self._heap if not w.future.done()]
            heapq.heapify(self._heap)

    def _release(self, held: float | None) -> None:
        """A slot is free: hand it to the best waiter, or count it free. `held`: how long it
        was held (None: it only passed through a waiter that left)."""
        if held is not None:
            self._mean_hold = (
                held
                if self._mean_hold is None
                else (1 - _EMA_WEIGHT) * self._mean_hold + _EMA_WEIGHT * held
            )
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if waiter.future.done():  # cancelled: it left, or leaves on its next step
                continue
            self._queued -= 1
            waiter.future.set_result(None)  # the slot changes hands: active stays the same
            return
        self._active -= 1
