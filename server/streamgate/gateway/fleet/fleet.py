"""The backends in use: the topology built from the configuration, its replicas' HTTP sessions,
health checks and load scraping. A reload swaps the topology: new replicas start, removed ones
drain (their running streams finish) and then close.
"""

from __future__ import annotations

import asyncio

from streamgate.gateway.fleet.health import HealthMonitor, HealthPolicy
from streamgate.gateway.fleet.load import LoadMonitor
from streamgate.gateway.fleet.topology import Topology
from streamgate.routing import Replica
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.logging import get_logger

__all__ = ["Fleet"]

log = get_logger(__name__)


class Fleet:
    """The topology in use and its replicas' sessions and monitors (one instance, from the
    composition root). `start`, `use` on a reload, `close` at the end."""

    def __init__(self, topology: Topology, health: HealthMonitor, load: LoadMonitor) -> None:
        self.topology = topology
        self.health = health
        self.load = load
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the replicas' sessions and check each once (limits and model ids are known
        before the first request); then keep checking and scraping in the background."""
        await self._open(self.topology.new_replicas(None))
        await self._watch()
        self.health.start()
        self.load.start()

    async def use(self, topology: Topology) -> None:
        """Serve from `topology` (a reload): its new replicas are started and checked once;
        replicas it no longer has take no new requests and close once idle."""
        previous = self.topology
        await self._open(topology.new_replicas(previous))
        self.topology = topology
        await self._watch()
        for replica in topology.gone_replicas(previous):
            replica.draining = True
            task = asyncio.create_task(_close_when_idle(replica), name=f"retire-{replica.name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def forget(self, replica: Replica) -> None:
        """`replica` came back with an empty KV cache: forget its prefixes in every pool."""
        for pool in self.topology.pools.values():
            pool.forget(replica)

    async def close(self) -> None:
        """Stop the monitors and close every session (retiring ones too)."""
        await self.health.stop()
        await self.load.stop()
        await cancel_and_wait(self._retiring)
        for replica in self.topology.replicas.values():
            await replica.backend.close()

    async def _open(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            await replica.backend.start()

    async def _watch(self) -> None:
        """Point the health checks and the load scraping at the topology's replicas."""
        t = self.topology
        pairs = [
            (r, HealthPolicy(b.health_interval_seconds, b.health_rise, b.health_fall))
            for r, b in zip(t.replicas.values(), t.backends.values(), strict=True)
        ]
        await self.health.watch(pairs)
        self.load.watch(list(t.replicas.values()))


async def _close_when_idle(replica: Replica) -> None:
    try:
        await replica.idle.wait()
    finally:
        await replica.backend.close()
        log.info("backend removed", backend=replica.name)
