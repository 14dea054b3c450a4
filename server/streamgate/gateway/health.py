"""Backend health in the background, and the gateway's own `grpc.health.v1` status.

Each replica is checked with `GET /health` every `health_interval_seconds` (and at once after a
request failed on it). The first check decides alone; after it, `rise` passed checks in a row
make a down replica healthy and `fall` failed ones make a healthy replica down. A replica that
turns healthy has its `/info` read again (limits, model id; a restarted backend may serve
another model) and its prefix entries forgotten (its cache is empty). The gateway reports
SERVING for "" and each service name while at least one replica is healthy, and NOT_SERVING
otherwise and for good once draining.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

from streamgate.backends import BackendError
from streamgate.routing import Replica
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics

__all__ = ["HealthMonitor", "HealthPolicy"]

log = get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class HealthPolicy:
    """How one replica is checked."""

    interval: float
    rise: int = 1
    fall: int = 1


class HealthMonitor:
    """Checks replicas and publishes the serving status on `servicer`.

    Args:
        replicas: every replica of every route.
        servicer: the grpc.health.v1 servicer registered on the server.
        services: fully qualified service names to report besides "".
        policies: how each replica is checked (same order).
        on_rejoin: told when a replica turns healthy again (its caches are cold).
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        metrics: GatewayMetrics,
        policies: Sequence[HealthPolicy],
        on_rejoin: Callable[[Replica], None] | None = None,
    ) -> None:
        self._replicas = list(replicas)
        self._policies = list(policies)
        self._on_rejoin = on_rejoin
        self._streak = [0] * len(self._replicas)  # same results in a row (+ passed, - failed)
        self._checked = [False] * len(self._replicas)
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
        await asyncio.gather(*(self._check(i) for i in range(len(self._replicas))))
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
                await asyncio.wait_for(wake.wait(), self._policies[index].interval)
            wake.clear()
            await self._check(index)
            await self._publish()

    def _verdict(self, index: int, passed: bool) -> bool:
        """Whether the replica counts as healthy after this check (rise/fall)."""
        streak = self._streak[index]
        streak = max(streak, 0) + 1 if passed else min(streak, 0) - 1
        self._streak[index] = streak
        replica, policy = self._replicas[index], self._policies[index]
        if not self._checked[index]:
            self._checked[index] = True
            return passed
        if passed and not replica.healthy:
            return streak >= policy.rise
        if not passed and replica.healthy:
            return -streak < policy.fall
        return replica.healthy

    async def _check(self, index: int) -> None:
        replica = self._replicas[index]
        healthy = self._verdict(index, await replica.backend.health())
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
            if healthy and self._on_rejoin is not None:
                self._on_rejoin(replica)
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
