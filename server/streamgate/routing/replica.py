"""One backend replica as routing sees it: the adapter plus what is known about its state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from streamgate.backends import BackendInfo, TGIBackend
from streamgate.routing.circuit import CircuitBreaker

__all__ = ["BackendLoad", "Lease", "Replica"]


@dataclass
class BackendLoad:
    """The backend's own load gauges, scraped from its /metrics (TGI's names)."""

    queue_size: float = 0.0
    """`tgi_queue_size`: requests waiting for a batch."""
    batch_size: float = 0.0
    """`tgi_batch_current_size`: sequences in the running batch."""
    batch_tokens_fraction: float = 0.0
    """`tgi_batch_current_max_tokens / tgi_batch_max_total_tokens`: KV pressure, 0 to 1."""
    scraped_at: float | None = None
    """time.monotonic() of the last scrape (None: never)."""


@dataclass(eq=False)
class Replica:
    """A backend and its live state (updated by the health monitor and the pipeline).

    Identity semantics (`eq=False`): two replicas are the same only if they are one object.
    """

    name: str
    backend: TGIBackend
    model_label: str | None = None
    """The model id configured for clients; None: the backend's /info model_id."""
    info: BackendInfo | None = None
    """The last /info answer (None until the backend answered once)."""
    healthy: bool = False
    supports_tokenize: bool | None = None
    """Whether POST /tokenize exists (None: not probed yet)."""
    gauges: BackendLoad = field(default_factory=BackendLoad)
    circuit: CircuitBreaker = field(default_factory=CircuitBreaker)
    draining: bool = False
    """Takes no new requests; running ones finish (removed by a reload, or drained by hand)."""
    in_flight: int = field(default=0, init=False)
    """Requests of this gateway streaming from it now (counted by leases)."""
    idle: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    """Set while nothing streams from it (`in_flight` is 0)."""

    def __post_init__(self) -> None:
        self.idle.set()

    def lease(self) -> Lease:
        """Count one request in flight until the lease is released (or its `with` ends)."""
        self.in_flight += 1
        self.idle.clear()
        return Lease(self._returned)

    def _returned(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    def routable(self) -> bool:
        """New requests may go to it: healthy, not draining, its circuit lets them through."""
        return self.healthy and not self.draining and self.circuit.available()

    def load(self) -> float:
        """Requests on the backend: this gateway's in flight, or the backend's own count
        (queue + batch, including other clients') when larger; the scraped gauges lag, the
        in-flight count does not. Plus its KV pressure (0 to 1), which breaks ties."""
        g = self.gauges
        return max(float(self.in_flight), g.queue_size + g.batch_size) + g.batch_tokens_fraction

    @property
    def model_id(self) -> str:
        """The model id clients see (configured label, else /info's, else the backend name)."""
        if self.model_label:
            return self.model_label
        return self.info.model_id if self.info is not None else self.name


class Lease:
    """One request in flight on a replica (`Replica.lease`); `release()` is idempotent."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release: Callable[[], None] | None = on_release

    def release(self) -> None:
        """The request no longer streams from the replica."""
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
