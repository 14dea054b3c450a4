"""Passive ejection: a circuit breaker per replica, driven by the outcome of real requests.

Closed: requests flow; `failures_to_open` consecutive failures open it. Open: the replica gets no
requests for `open_seconds`. Then half-open: exactly one request (a probe) goes through; its
success closes the circuit, its failure opens it again for twice as long (up to
`max_open_seconds`). Active health checks are separate (gateway/health.py): a replica is used
only when it is healthy *and* its circuit lets the request through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """See the module doc."""

    def __init__(
        self,
        failures_to_open: int = 5,
        open_seconds: float = 5.0,
        max_open_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._cooldown = open_seconds
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose cooldown passed is half-open)."""
        if self._state is CircuitState.OPEN and self._clock() >= self._opened_at + self._cooldown:
            self._state = CircuitState.HALF_OPEN
            self._probing = False
        return self._state

    def available(self) -> bool:
        """A request may be sent now (half-open: only while no probe is out)."""
        state = self.state
        return state is CircuitState.CLOSED or (
            state is CircuitState.HALF_OPEN and not self._probing
        )

    def on_send(self) -> None:
        """A request is being sent: in half-open, it is the probe."""
        if self.state is CircuitState.HALF_OPEN:
            self._probing = True

    def record_success(self) -> None:
        """A request succeeded (its first token arrived): close."""
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._cooldown = self.open_seconds
        self._probing = False

    def record_failure(self) -> bool:
        """A request failed because of the replica; True if that opened the circuit."""
        state = self.state
        if state is CircuitState.HALF_OPEN:
            self._open(min(self._cooldown * 2, self.max_open_seconds))
            return True
        self._failures += 1
        if state is CircuitState.CLOSED and self._failures >= self.failures_to_open:
            self._open(self.open_seconds)
            return True
        return False

    def _open(self, cooldown: float) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._cooldown = cooldown
        self._probing = False
        self._failures = 0
