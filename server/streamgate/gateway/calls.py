"""The calls in progress: refused while draining, interruptible at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamgate.gateway.pipeline.errors import GatewayError, Reason
from streamgate.gateway.pipeline.s01_call import Call

__all__ = ["CallRegistry"]


class CallRegistry:
    """Tracks running calls; refuses new ones once draining (one instance, from the
    composition root)."""

    def __init__(self) -> None:
        self._calls: set[Call] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._calls)

    @contextmanager
    def track(self, call: Call) -> Iterator[None]:
        """Register `call`, run by the current task, for the block (`Call.interrupt` cancels
        that task). Raises GatewayError(DRAINING) when the gateway is shutting down."""
        if self.draining:
            raise GatewayError(
                Reason.DRAINING, "the gateway is shutting down; retry on another instance"
            )
        call.task = asyncio.current_task()
        self._calls.add(call)
        self._idle.clear()
        try:
            yield
        finally:
            self._calls.discard(call)
            if not self._calls:
                self._idle.set()

    def start_draining(self) -> None:
        """Refuse every new call from now on."""
        self.draining = True

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no call runs; False if some still do after `seconds`."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def interrupt_all(self, make_error: Callable[[Call], GatewayError]) -> int:
        """Interrupt every running call; returns how many."""
        calls = list(self._calls)
        for call in calls:
            call.interrupt(make_error(call))
        return len(calls)
