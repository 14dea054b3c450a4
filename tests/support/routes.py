"""Routing objects for unit tests: replicas (never started, never connected), their /info,
pools and routes."""

from __future__ import annotations

from streamgate.backends import BackendInfo, TGIBackend
from streamgate.routing import Picker, Pool, Replica, RoundRobin, Route, Target

__all__ = ["backend_info", "pool", "replica", "route"]


def backend_info(
    *,
    model_id: str = "m",
    max_input_tokens: int | None = None,
    max_total_tokens: int | None = None,
    max_stop_sequences: int | None = None,
    **extra: object,
) -> BackendInfo:
    """What a backend's GET /info would say (`extra`: more keys of the answer, such as the
    engine's `chat_template`)."""
    return BackendInfo(
        model_id=model_id,
        model_sha=None,
        max_input_tokens=max_input_tokens,
        max_total_tokens=max_total_tokens,
        max_concurrent_requests=None,
        max_best_of=None,
        max_stop_sequences=max_stop_sequences,
        raw={"model_id": model_id, **extra},
    )


def replica(
    name: str, *, in_flight: int = 0, healthy: bool = True, info: BackendInfo | None = None
) -> Replica:
    """A replica at http://<name>:80, with `in_flight` requests streaming from it (leases
    never released)."""
    backend = TGIBackend.for_url(f"http://{name}:80", name=name)
    r = Replica(name=name, backend=backend, healthy=healthy, info=info)
    for _ in range(in_flight):
        r.lease()
    return r


def pool(name: str, *replicas: Replica, picker: Picker | None = None) -> Pool:
    """A pool of `replicas` (round robin unless `picker`)."""
    return Pool(name, replicas, picker or RoundRobin())


def route(name: str = "r", *replicas: Replica, default_max_new_tokens: int | None = None) -> Route:
    """A route served by one pool of `replicas` (the pool has the route's name)."""
    return Route(
        name,
        Target(((pool(name, *replicas), 1.0),)),
        default_max_new_tokens=default_max_new_tokens,
    )
