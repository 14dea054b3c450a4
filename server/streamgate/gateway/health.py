"""Backend health in the background, and the gateway's own `grpc.health.v1` status.

Each replica is checked with `GET /health` every `health_interval_seconds` (and at once after a
request failed on it). A replica that turns healthy has its `/info` read again (limits, model
id; a restarted backend may serve another model). The gateway reports SERVING for "" and each
service name while at least one replica is healthy, and NOT_SERVING otherwise and for good once
draining.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from streamgate.backends import BackendError
from streamgate.routing import Replica
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics

__all__ = ["HealthMonitor"]

log = get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    """Checks replicas and publishes the serving status on `servicer`.

    Args:
        replicas: every replica of every route.
        servicer: the grpc.health.v1 servicer registered on the server.
        services: fully qualified service names to report besides "".
        intervals: seconds between checks, per replica (same order).
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        metrics: GatewayMetrics,
        intervals: Sequence[float],
    ) -> None:
        self._replicas = list(replicas)
        self._intervals = list(intervals)
        self.servicer = servicer
        self._services = ["", *services]
        self._metrics = metrics
        self._wake = [asyncio.Event() for _ in self._replicas]
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._published: int | None = None

    @property
    def serving(self) -> bool:
        """At least one replica is healthy and the gateway is not draining."""
        return not self._draining and any(r.healthy for r in self._replicas)

    async def check_all(self) -> None:
        """Check every replica once (concurrently) and publish the result."""
        await asyncio.gather(*(self._check(r) for r in self._replicas))
        await self._publish()

    def start(self) -> None:
        """Keep checking in the background until `stop()`."""
        for i, replica in enumerate(self._replicas):
            self._tasks.append(
                asyncio.create_task(self._loop(i, replica), name=f"health-{replica.name}")
            )

    def check_soon(self, replica: Replica) -> None:
        """Check `replica` now instead of at its next interval (after a failed request)."""
        for i, r in enumerate(self._replicas):
            if r is replica:
                self._wake[i].set()

    async def drain(self) -> None:
        """Report NOT_SERVING for good (shutdown)."""
        self._draining = True
        await self.servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        """Stop the background checks."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, index: int, replica: Replica) -> None:
        wake = self._wake[index]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._intervals[index])
            wake.clear()
            await self._check(replica)
            await self._publish()

    async def _check(self, replica: Replica) -> None:
        healthy = await replica.backend.health()
        if healthy and not replica.healthy:
            # (Re)joining: read its limits and model id, and whether it can tokenize.
            try:
                replica.info = await replica.backend.info()
                if replica.supports_tokenize is None:
                    replica.supports_tokenize = await replica.backend.tokenize("a") is not None
            except BackendError as err:
                log.warning("backend info failed", backend=replica.name, error=str(err))
                healthy = False
        if healthy != replica.healthy:
            log.info(
                "backend health changed",
                backend=replica.name,
                healthy=healthy,
                model=replica.model_id,
            )
        replica.healthy = healthy
        self._metrics.backend_healthy.labels(replica.name).set(1 if healthy else 0)

    async def _publish(self) -> None:
        if self._draining:
            return  # enter_graceful_shutdown() set NOT_SERVING for good
        status = SERVING if self.serving else NOT_SERVING
        if status == self._published:
            return
        self._published = status
        for name in self._services:
            await self.servicer.set(name, status)
