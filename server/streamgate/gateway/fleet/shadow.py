"""Shadow traffic: a copy of a request sent to another pool, its output read and discarded.

The copy runs in its own task after the caller's request was admitted: it never delays the
caller, never fails it, and is not cancelled with it. At most `max_in_flight` copies run at
once (more are dropped and counted), each bounded by `timeout`; what is measured is whether it
finished, its time to first token and its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from streamgate.backends import BackendError
from streamgate.routing import PickRequest, Pool
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tgi import GenerateParameters

__all__ = ["ShadowSender"]


class ShadowSender:
    """See the module doc (one instance, from the composition root)."""

    def __init__(self, metrics: GatewayMetrics, max_in_flight: int = 32, timeout: float = 60.0):
        self._metrics = metrics
        self._max = max_in_flight
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def send(
        self, pool: Pool, inputs: str, parameters: GenerateParameters, request_id: str
    ) -> None:
        """Start a copy of the request on `pool` (or drop it when too many are running)."""
        if len(self._tasks) >= self._max:
            self._metrics.shadow_requests.labels(pool.name, "dropped").inc()
            return
        task = asyncio.create_task(self._run(pool, inputs, parameters, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel the copies still running (shutdown)."""
        await cancel_and_wait(self._tasks)

    async def _run(
        self, pool: Pool, inputs: str, parameters: GenerateParameters, request_id: str
    ) -> None:
        replica = pool.pick(PickRequest())
        if replica is None:
            self._metrics.shadow_requests.labels(pool.name, "no_backend").inc()
            return
        started = time.monotonic()
        first: float | None = None
        result = "ok"
        stream = replica.backend.generate_stream(
            inputs, parameters, timeout=self._timeout, request_id=f"{request_id}-shadow"
        )
        with replica.lease():
            try:
                async with contextlib.aclosing(stream):
                    async for _ in stream:
                        if first is None:
                            first = time.monotonic() - started
            except BackendError as err:
                result = err.kind
        m = self._metrics
        m.shadow_requests.labels(pool.name, result).inc()
        if first is not None:
            m.shadow_time_to_first_token.labels(pool.name).observe(first)
        m.shadow_duration.labels(pool.name).observe(time.monotonic() - started)
