"""Whether and how a request uses the exact cache (docs/api.md, "Cache").

Read unless the request bypasses the cache. Written only when the answer is deterministic
(greedy, or sampling with an explicit seed) or the request opts in (`store_sampled`), the
request allows it (not `no_store`), and the stream finished normally. The scope is the
tenant's cache namespace, narrowed by the request's `cache.namespace`: a request can share
entries only within its tenant's scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.backends import TGIParameters
from streamgate.cache import CacheKeyParts, cache_key
from streamgate.gateway.prepare import PreparedRequest
from streamgate.routing import Pool
from streamgate.tenancy import Caller
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["CachePlan", "deterministic", "plan_cache"]


@dataclass(frozen=True)
class CachePlan:
    """The cache decisions of one request."""

    key: bytes
    scope: str
    read: bool
    write: bool
    ttl: float
    only_if_cached: bool


def deterministic(p: TGIParameters) -> bool:
    """The backend gives the same answer every time: greedy, or seeded sampling."""
    sampling = bool(p.do_sample) or any(
        v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p)
    )
    return not sampling or p.seed is not None


def plan_cache(
    control: pb.CacheControl,
    prepared: PreparedRequest,
    caller: Caller,
    route: str,
    pool: Pool,
    *,
    enabled: bool,
    default_ttl: float,
) -> CachePlan:
    """The plan of a request whose cache control is `control`, sent to `pool`."""
    scope = caller.tenant.cache_namespace
    if control.namespace:
        scope += "/" + control.namespace
    key = cache_key(
        CacheKeyParts(
            scope=scope,
            route=route,
            model=pool.model_identity(),
            prompt=prepared.inputs,
            parameters=prepared.parameters.to_json(),
            tokens=prepared.tokens,
        )
    )
    bypass = not enabled or control.mode == pb.CACHE_MODE_BYPASS
    return CachePlan(
        key=key,
        scope=scope,
        read=not bypass,
        write=(
            not bypass
            and control.mode != pb.CACHE_MODE_NO_STORE
            and (deterministic(prepared.parameters) or control.store_sampled)
        ),
        ttl=float(control.ttl_seconds or default_ttl),
        only_if_cached=control.mode == pb.CACHE_MODE_ONLY_IF_CACHED,
    )
