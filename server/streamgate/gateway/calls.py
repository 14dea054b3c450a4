"""The calls in progress: refused while draining, interruptible at shutdown or on a stall."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason

__all__ = ["ActiveCall", "CallRegistry"]


class ActiveCall:
    """One generation call and the task that runs its handler."""

    def __init__(self, ctx: RequestContext, task: asyncio.Task[object]) -> None:
        self.ctx = ctx
        self._task = task
        self.error: GatewayError | None = None
        """Why the gateway interrupted the call (None: it was not)."""
        self.finishing = False
        """The handler is sending its final status: too late to interrupt."""

    def interrupt(self, error: GatewayError) -> None:
        """End the call with `error`: cancels the handler wherever it waits (a write to a client
        that does not read included); the handler sends `error` as the call's status."""
        if self.error is None and not self.finishing and not self._task.done():
            self.error = error
            self._task.cancel()


class CallRegistry:
    """Tracks running calls; refuses new ones once draining."""

    def __init__(self) -> None:
        self._calls: set[ActiveCall] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._calls)

    @contextmanager
    def track(self, ctx: RequestContext) -> Iterator[ActiveCall]:
        """Register the current task's call for the block. Raises GatewayError(UNAVAILABLE,
        DRAINING) when the gateway is shutting down."""
        if self.draining:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.DRAINING,
                "the gateway is shutting down; retry on another instance",
            )
        task = asyncio.current_task()
        assert task is not None, "track() runs inside the handler's task"
        call = ActiveCall(ctx, task)
        self._calls.add(call)
        self._idle.clear()
        try:
            yield call
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

    def interrupt_all(self, make_error: Callable[[ActiveCall], GatewayError]) -> int:
        """Interrupt every running call; returns how many."""
        calls = list(self._calls)
        for call in calls:
            call.interrupt(make_error(call))
        return len(calls)
