"""Stage 5, the exact cache: a request's plan, its lookup, and the store of a finished answer
(docs/api.md, "Cache").

Read unless the request bypasses the cache. Written only when the answer is deterministic
(greedy, or sampling with an explicit seed) or the request opts in (`store_sampled`), the
request allows it (not `no_store`), and the stream finished normally. The scope is the
tenant's cache namespace, narrowed by the request's `cache.namespace`: a request can share
entries only within its tenant's scope. The tiers themselves (in-process, Redis) are in
streamgate/cache/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamgate.cache import CachedResponse, CacheKeyParts, Found, TieredCache, cache_key
from streamgate.config import CacheConfig, LimitsConfig
from streamgate.gateway.pipeline.errors import GatewayError, Reason
from streamgate.gateway.pipeline.events import CacheStatus, CacheTier, cache_name
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.routing import Pool
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Caller
from streamgate.tgi import GenerateParameters, StreamEvent
from streamgate_client.v1 import generation_pb2 as pb

__all__ = [
    "CachePlan",
    "CacheStats",
    "ResponseCache",
    "deterministic",
    "not_cached",
    "outcome",
]


@dataclass(frozen=True)
class CachePlan:
    """The cache decisions of one request."""

    key: bytes
    scope: str
    read: bool
    write: bool
    ttl: float
    only_if_cached: bool


@dataclass
class CacheStats:
    """Cache outcomes since start (GetCacheStats); each call counts once."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    coalesced: int = 0
    redis_hits: int = 0


def not_cached() -> GatewayError:
    """NOT_FOUND: `CACHE_MODE_ONLY_IF_CACHED` without a cached answer."""
    return GatewayError(
        Reason.NOT_CACHED, "no cached answer for this request (CACHE_MODE_ONLY_IF_CACHED)"
    )


def outcome(found: Found | None, *, coalesced: bool) -> tuple[CacheStatus, CacheTier]:
    """How the cache answered a call, and the last tier asked: a hit, a miss, a bypass (not
    read), or coalesced (a miss that joined an identical generation under way)."""
    if found is None:
        return pb.CACHE_STATUS_BYPASS, "local"
    if found.response is not None:
        return pb.CACHE_STATUS_HIT, found.tier
    if coalesced:
        return pb.CACHE_STATUS_COALESCED, "local"
    return pb.CACHE_STATUS_MISS, found.tier


def deterministic(p: GenerateParameters) -> bool:
    """The backend gives the same answer every time: greedy, or seeded sampling."""
    sampling = bool(p.do_sample) or any(
        v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p)
    )
    return not sampling or p.seed is not None


class ResponseCache:
    """The cache as the pipeline uses it (one instance, from the composition root)."""

    def __init__(
        self,
        tiers: TieredCache,
        config: CacheConfig,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
    ) -> None:
        self.tiers = tiers
        self.enabled = config.enabled
        self.stats = CacheStats()
        self._default_ttl = min(config.default_ttl_seconds, limits.max_cache_ttl_seconds)
        self._metrics = metrics

    def plan(
        self,
        control: pb.CacheControl,
        prepared: PreparedRequest,
        caller: Caller,
        route: str,
        pool: Pool,
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
        bypass = not self.enabled or control.mode == pb.CACHE_MODE_BYPASS
        return CachePlan(
            key=key,
            scope=scope,
            read=not bypass,
            write=(
                not bypass
                and control.mode != pb.CACHE_MODE_NO_STORE
                and (deterministic(prepared.parameters) or control.store_sampled)
            ),
            ttl=float(control.ttl_seconds or self._default_ttl),
            only_if_cached=control.mode == pb.CACHE_MODE_ONLY_IF_CACHED,
        )

    async def lookup(self, plan: CachePlan) -> Found | None:
        """What the tiers have for the plan's key (None: not read; `response` None: a miss)."""
        return await self.tiers.get(plan.key) if plan.read else None

    def store(
        self,
        plan: CachePlan,
        events: Sequence[StreamEvent],
        *,
        model: str,
        backend: str,
        pool: str,
        input_tokens: int,
        requested_seed: int | None,
    ) -> None:
        """Keep a finished generation for replay (when the plan allows it)."""
        if not plan.write:
            self._metrics.cache_requests.labels("store_skipped", "local").inc()
            return
        details = events[-1].details
        seed = requested_seed
        if seed is None and details is not None:
            seed = details.seed  # the one the backend drew
        entry = CachedResponse(
            events=tuple(events),
            scope=plan.scope,
            model=model,
            backend=backend,
            pool=pool,
            input_tokens=input_tokens,
            seed=seed,
        )
        self.tiers.put(plan.key, entry, plan.ttl)

    def count(self, status: CacheStatus, tier: CacheTier) -> None:
        """Count one call's outcome, in the tier last asked (the finish stage calls it once
        per generation call that reached the cache)."""
        name = cache_name(status).lower()
        if not name:
            return  # the call ended before the cache stage
        self._metrics.cache_requests.labels(name, tier).inc()
        s = self.stats
        if status == pb.CACHE_STATUS_HIT:
            s.hits += 1
            s.redis_hits += tier == "redis"
        elif status == pb.CACHE_STATUS_MISS:
            s.misses += 1
        elif status == pb.CACHE_STATUS_BYPASS:
            s.bypasses += 1
        else:
            s.coalesced += 1
