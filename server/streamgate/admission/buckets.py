"""A token bucket: the per-minute limits of requests and tokens."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`capacity` units, refilled continuously at capacity/period per second; starts full.

    A per-minute limit of N is a bucket of N units refilled over 60 s: a burst of N at once,
    then N a minute.
    """

    def __init__(
        self, capacity: float, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity <= 0 or period <= 0:
            raise ValueError("capacity and period must be positive")
        self._capacity = float(capacity)
        self._rate = capacity / period
        self._clock = clock
        self._level = float(capacity)
        self._at = clock()

    @property
    def capacity(self) -> float:
        """The most the bucket holds."""
        return self._capacity

    def available(self) -> float:
        """Units in the bucket now (negative after a `charge` beyond it)."""
        now = self._clock()
        self._level = min(self._capacity, self._level + (now - self._at) * self._rate)
        self._at = now
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` units are in the bucket (0: now; inf: never, it is larger
        than the bucket)."""
        if amount > self._capacity:
            return math.inf
        missing = amount - self.available()
        return max(missing, 0.0) / self._rate

    def take(self, amount: float) -> float:
        """Take `amount` units if they are there (returns 0.0); otherwise take nothing and return
        `wait_time(amount)`."""
        wait = self.wait_time(amount)
        if wait == 0.0:
            self._level -= amount
        return wait

    def give(self, amount: float) -> None:
        """Return units (a refund), never beyond the capacity."""
        self._level = min(self._capacity, self.available() + amount)

    def charge(self, amount: float) -> None:
        """Take units unconditionally (usage beyond a reservation); the level may go negative."""
        self._level = self.available() - amount

    def seconds_to_full(self) -> float:
        """Seconds until the bucket is full again."""
        return max(self._capacity - self.available(), 0.0) / self._rate
