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
    """A place among the active streams; `release()` is idempotent (use it in a `finally`)."""

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
    gone: bool = field(default=False, compare=False)
    """Cancelled or timed out: skipped when found at the top of the heap."""


class AdmissionQueue:
    """See the module doc."""

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
        """Slots held now."""
        return self._active

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return self._queued

    def retry_after(self) -> float:
        """A hint for RetryInfo: roughly when a slot frees for a newcomer."""
        if self._mean_hold is None:
            return 1.0
        wait = self._mean_hold * (self._queued + 1) / self.max_active
        return min(max(wait, _MIN_RETRY), self.max_wait)

    async def acquire(self, priority: int, deadline_in: float | None = None) -> Slot:
        """A slot, at once or after waiting. `deadline_in`: seconds left of the caller's
        deadline (the wait ends at the earlier of it and `max_wait`).

        Raises QueueFull, QueueTimeout; a cancelled wait leaves the queue at once.
        """
        if self._active < self.max_active and self._queued == 0:
            self._active += 1
            return Slot(self, 0.0)
        if self._queued >= self.max_queued:
            raise QueueFull(self._queued, self.retry_after())
        bound = self.max_wait if deadline_in is None else max(min(self.max_wait, deadline_in), 0)
        waiter = _Waiter(
            (-priority, next(self._arrivals)), asyncio.get_running_loop().create_future()
        )
        heapq.heappush(self._heap, waiter)
        self._queued += 1
        started = self._clock()
        try:
            # Not wait_for(): it returns the result when cancelled after the slot arrived,
            # which would swallow the caller's cancellation.
            async with asyncio.timeout(bound):
                await waiter.future
        except BaseException as err:
            if waiter.future.done() and not waiter.future.cancelled():
                # The slot was handed over just as the wait ended: pass it on.
                self._release(None)
            else:
                waiter.future.cancel()
                waiter.gone = True
                self._queued -= 1
            if isinstance(err, TimeoutError):
                raise QueueTimeout(self._clock() - started, self.retry_after()) from None
            raise
        return Slot(self, self._clock() - started)

    def _release(self, held: float | None) -> None:
        """A slot is free: hand it to the best waiter, or count it free."""
        if held is not None:
            self._mean_hold = (
                held
                if self._mean_hold is None
                else (1 - _EMA_WEIGHT) * self._mean_hold + _EMA_WEIGHT * held
            )
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if waiter.gone or waiter.future.done():  # done: cancelled, leaving on its next step
                continue
            self._queued -= 1
            waiter.future.set_result(None)  # the slot changes hands: active stays the same
            return
        self._active -= 1
