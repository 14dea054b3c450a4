"""Backend load in the background: TGI's queue and batch gauges, scraped from /metrics.

Pickers read `Replica.gauges` (routing.replica.BackendLoad); they see other clients' work on a
backend, which this gateway's in-flight count does not. A failed scrape keeps the last values:
health checks, not this, decide whether a replica is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from streamgate.backends import BackendError
from streamgate.routing import Replica
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.metrics import GatewayMetrics

__all__ = ["GAUGES", "LoadMonitor"]

GAUGES = (
    "tgi_queue_size",
    "tgi_batch_current_size",
    "tgi_batch_current_max_tokens",
    "tgi_batch_max_total_tokens",
)


class LoadMonitor:
    """Scrapes each watched replica every `interval` seconds until `stop()`."""

    def __init__(self, interval: float, metrics: GatewayMetrics) -> None:
        self._interval = interval
        self._metrics = metrics
        self._replicas: dict[int, Replica] = {}  # by id
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._running = False

    def watch(self, replicas: Sequence[Replica]) -> None:
        """Scrape exactly these replicas from now on."""
        wanted = {id(r): r for r in replicas}
        for key in [k for k in self._replicas if k not in wanted]:
            del self._replicas[key]
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
        for key, replica in wanted.items():
            if key not in self._replicas:
                self._replicas[key] = replica
                if self._running:
                    self._start(key)

    def start(self) -> None:
        """Begin scraping in the background."""
        self._running = True
        for key in self._replicas:
            self._start(key)

    async def stop(self) -> None:
        """Stop scraping."""
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(tasks)

    def _start(self, key: int) -> None:
        replica = self._replicas[key]
        self._tasks[key] = asyncio.create_task(self._loop(replica), name=f"load-{replica.name}")

    async def _loop(self, replica: Replica) -> None:
        while True:
            if replica.healthy and await scrape(replica):
                g = replica.gauges
                self._metrics.backend_load.labels(replica.name).set(g.queue_size + g.batch_size)
            await asyncio.sleep(self._interval)


async def scrape(replica: Replica) -> bool:
    """Read the replica's gauges once; False if that failed (the last values are kept)."""
    try:
        values = await replica.backend.gauges(GAUGES)
    except BackendError:
        return False
    g = replica.gauges
    g.queue_size = values.get("tgi_queue_size", 0.0)
    g.batch_size = values.get("tgi_batch_current_size", 0.0)
    most = values.get("tgi_batch_max_total_tokens", 0.0)
    g.batch_tokens_fraction = (
        values.get("tgi_batch_current_max_tokens", 0.0) / most if most else 0.0
    )
    g.scraped_at = time.monotonic()
    return True
