"""Backend health in the background, and from it the gateway's own serving status.

Each replica is checked with `GET /health` every `health_interval_seconds` (and at once after a
request failed on it). The first check decides alone; after it, `rise` passed checks in a row
make a down replica healthy and `fall` failed ones make a healthy replica down. A replica that
turns healthy has its `/info` read again (limits, model id; a restarted backend may serve
another model) and its prefix entries forgotten (its cache is empty). The gateway is serving
while at least one replica is healthy, and not serving otherwise and for good once draining;
a `ServingStatus` (the gRPC door's grpc.health.v1 service) is told of every change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamgate.backends import BackendError
from streamgate.routing import Replica
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics

__all__ = ["HealthMonitor", "HealthPolicy", "ServingStatus"]

log = get_logger(__name__)


class ServingStatus(Protocol):
    """Where the gateway's serving status is published."""

    async def publish(self, serving: bool) -> None:
        """The gateway serves (or not) from now on."""

    async def drain(self) -> None:
        """The gateway is shutting down: not serving, for good."""


@dataclass(frozen=True)
class HealthPolicy:
    """How one replica is checked."""

    interval: float
    rise: int = 1
    fall: int = 1


@dataclass(eq=False)
class _Watch:
    """One replica's checks."""

    replica: Replica
    policy: HealthPolicy
    streak: int = 0
    """Same results in a row: + passed, - failed."""
    checked: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class HealthMonitor:
    """Checks replicas and publishes the gateway's serving status to `status`.

    Args:
        status: told whether the gateway serves, at every change.
        on_rejoin: told when a replica turns healthy again (its caches are cold).
    """

    def __init__(
        self,
        status: ServingStatus,
        metrics: GatewayMetrics,
        on_rejoin: Callable[[Replica], None] | None = None,
    ) -> None:
        self._watches: dict[int, _Watch] = {}  # by id(replica)
        self._on_rejoin = on_rejoin
        self._status = status
        self._metrics = metrics
        self._running = False
        self._draining = False
        self._published: bool | None = None

    @property
    def serving(self) -> bool:
        """At least one replica is healthy and the gateway is not draining."""
        return not self._draining and any(w.replica.healthy for w in self._watches.values())

    async def watch(self, replicas: Sequence[tuple[Replica, HealthPolicy]]) -> None:
        """Check exactly these replicas from now on: new ones are checked once at once, the
        others keep their state (policies are updated), the rest are no longer checked."""
        wanted = {id(r): (r, policy) for r, policy in replicas}
        for key in [k for k in self._watches if k not in wanted]:
            task = self._watches.pop(key).task
            if task is not None:
                task.cancel()
        new: list[_Watch] = []
        for key, (replica, policy) in wanted.items():
            if key in self._watches:
                self._watches[key].policy = policy
            else:
                self._watches[key] = watch = _Watch(replica, policy)
                new.append(watch)
        await asyncio.gather(*(self._check(w) for w in new))
        if self._running:
            for w in new:
                self._start(w)
        await self._publish()

    def start(self) -> None:
        """Keep checking in the background until `stop()`."""
        self._running = True
        for w in self._watches.values():
            self._start(w)

    def check_soon(self, replica: Replica) -> None:
        """Check `replica` now instead of at its next interval (after a failed request)."""
        w = self._watches.get(id(replica))
        if w is not None:
            w.wake.set()

    async def drain(self) -> None:
        """Report not serving for good (shutdown)."""
        self._draining = True
        await self._status.drain()

    async def stop(self) -> None:
        """Stop the background checks."""
        self._running = False
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for w in self._watches.values():
            w.task = None
        await cancel_and_wait(tasks)

    def _start(self, w: _Watch) -> None:
        w.task = asyncio.create_task(self._loop(w), name=f"health-{w.replica.name}")

    async def _loop(self, w: _Watch) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.wake.wait(), w.policy.interval)
            w.wake.clear()
            await self._check(w)
            await self._publish()

    @staticmethod
    def _verdict(w: _Watch, passed: bool) -> bool:
        """Whether the replica counts as healthy after this check (rise/fall)."""
        w.streak = max(w.streak, 0) + 1 if passed else min(w.streak, 0) - 1
        replica = w.replica
        if not w.checked:
            w.checked = True
            return passed
        if passed and not replica.healthy:
            return w.streak >= w.policy.rise
        if not passed and replica.healthy:
            return -w.streak < w.policy.fall
        return replica.healthy

    async def _check(self, w: _Watch) -> None:
        replica = w.replica
        healthy = self._verdict(w, await replica.backend.health())
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
            return  # drain() said "not serving" for good
        serving = self.serving
        if serving != self._published:
            self._published = serving
            await self._status.publish(serving)
