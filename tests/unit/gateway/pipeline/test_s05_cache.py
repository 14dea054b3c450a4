"""The cache stage: a request's plan (read, write, key, scope, ttl), the lookup's outcome, the
store of a finished answer, and each call counted once."""

from __future__ import annotations

from typing import Any

import pytest

from streamgate.cache import Found, LocalCache, TieredCache
from streamgate.config import CacheConfig, GatewayConfig, LimitsConfig
from streamgate.gateway.pipeline.errors import Code
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.gateway.pipeline.s05_cache import (
    CachePlan,
    ResponseCache,
    deterministic,
    not_cached,
    outcome,
)
from streamgate.routing import Pool
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Caller, Tenancy
from streamgate.tgi import GenerateParameters
from streamgate_client.v1 import generation_pb2 as pb
from support.events import cached_response, token_events
from support.routes import pool as make_pool
from support.routes import replica

POOL: Pool = make_pool("p", replica("b"))
CALLER = Tenancy.from_config(GatewayConfig()).anonymous


def response_cache(*, enabled: bool = True, **limits: Any) -> ResponseCache:
    return ResponseCache(
        TieredCache(LocalCache(100, 1 << 20)),
        CacheConfig(enabled=enabled, default_ttl_seconds=60),
        LimitsConfig(**limits),
        GatewayMetrics(),
    )


def prepared(**parameters: Any) -> PreparedRequest:
    return PreparedRequest(
        inputs="hi",
        parameters=GenerateParameters(**parameters),
        chat=False,
        tokens=False,
        seed=None,
    )


def plan(
    control: pb.CacheControl,
    request: PreparedRequest | None = None,
    caller: Caller = CALLER,
    cache: ResponseCache | None = None,
) -> CachePlan:
    return (cache or response_cache()).plan(control, request or prepared(), caller, "r", POOL)


def test_greedy_and_seeded_answers_are_deterministic() -> None:
    assert deterministic(GenerateParameters())
    assert deterministic(GenerateParameters(do_sample=False, max_new_tokens=3))
    assert not deterministic(GenerateParameters(temperature=0.7))
    assert not deterministic(GenerateParameters(do_sample=True))
    assert deterministic(GenerateParameters(do_sample=True, temperature=0.7, seed=3))


@pytest.mark.parametrize(
    ("mode", "read", "write"),
    [
        (pb.CACHE_MODE_UNSPECIFIED, True, True),
        (pb.CACHE_MODE_BYPASS, False, False),
        (pb.CACHE_MODE_NO_STORE, True, False),
        (pb.CACHE_MODE_ONLY_IF_CACHED, True, True),
    ],
)
def test_cache_modes(mode: pb.CacheMode.ValueType, read: bool, write: bool) -> None:
    planned = plan(pb.CacheControl(mode=mode))
    assert (planned.read, planned.write) == (read, write)
    assert planned.only_if_cached == (mode == pb.CACHE_MODE_ONLY_IF_CACHED)
    sampled = plan(pb.CacheControl(mode=mode), prepared(temperature=0.5))
    assert not sampled.write  # not stored without a seed...
    opted_in = plan(pb.CacheControl(mode=mode, store_sampled=True), prepared(temperature=0.5))
    assert opted_in.write == write  # ...unless the request opts in


def test_a_disabled_cache_is_neither_read_nor_written() -> None:
    planned = plan(pb.CacheControl(), cache=response_cache(enabled=False))
    assert not planned.read and not planned.write


def test_the_ttl_is_the_requests_else_the_default_bounded_by_the_limit() -> None:
    assert plan(pb.CacheControl()).ttl == 60.0
    assert plan(pb.CacheControl(ttl_seconds=5)).ttl == 5.0
    assert plan(pb.CacheControl(), cache=response_cache(max_cache_ttl_seconds=10)).ttl == 10.0


def test_a_request_namespace_stays_inside_the_tenants_scope() -> None:
    config = GatewayConfig.model_validate(
        {
            "tenants": [
                {"name": "default"},
                {"name": "a"},
                {"name": "b", "cache_namespace": "shared"},
                {"name": "c", "cache_namespace": "shared"},
            ]
        }
    )
    tenancy = Tenancy.from_config(config)

    def key(tenant: str, namespace: str = "") -> bytes:
        caller = Caller(tenancy.tenants[tenant])
        return plan(pb.CacheControl(namespace=namespace), caller=caller).key

    assert key("a") != key("b")  # tenants are apart...
    assert key("b") == key("c")  # ...unless configured into one namespace
    assert key("a", "team") != key("b", "team")  # a request namespace never crosses tenants
    assert key("a", "team") != key("a")
    scoped = plan(pb.CacheControl(namespace="team"), caller=Caller(tenancy.tenants["b"]))
    assert scoped.scope == "shared/team"


def test_outcomes_of_a_lookup() -> None:
    hit = cached_response(2)
    assert outcome(None, coalesced=False) == (pb.CACHE_STATUS_BYPASS, "local")
    assert outcome(Found(hit, "redis"), coalesced=False) == (pb.CACHE_STATUS_HIT, "redis")
    assert outcome(Found(None, "redis"), coalesced=False) == (pb.CACHE_STATUS_MISS, "redis")
    assert outcome(Found(None, "redis"), coalesced=True) == (pb.CACHE_STATUS_COALESCED, "local")


def test_only_if_cached_without_an_answer_is_not_found() -> None:
    assert not_cached().code == Code.NOT_FOUND


async def test_a_stored_answer_is_found_by_its_plan_and_keeps_the_backends_seed() -> None:
    cache = response_cache()
    planned = plan(pb.CacheControl(), cache=cache)
    found = await cache.lookup(planned)
    assert found is not None and found.response is None
    events = token_events(3)
    cache.store(
        planned, events, model="m", backend="b", pool="p", input_tokens=3, requested_seed=None
    )
    found = await cache.lookup(planned)
    assert found is not None and found.response is not None
    assert found.response.events == tuple(events) and found.response.scope == planned.scope
    assert await cache.lookup(plan(pb.CacheControl(mode=pb.CACHE_MODE_BYPASS))) is None


async def test_an_answer_the_plan_may_not_write_is_not_stored() -> None:
    cache = response_cache()
    planned = plan(pb.CacheControl(mode=pb.CACHE_MODE_NO_STORE), cache=cache)
    cache.store(
        planned, token_events(2), model="m", backend="b", pool="p", input_tokens=1,
        requested_seed=None,
    )  # fmt: skip
    assert len(cache.tiers.local) == 0


def test_each_call_counts_once_in_exactly_one_outcome() -> None:
    cache = response_cache()
    for status, tier in [
        (pb.CACHE_STATUS_MISS, "local"),
        (pb.CACHE_STATUS_COALESCED, "local"),
        (pb.CACHE_STATUS_COALESCED, "local"),
        (pb.CACHE_STATUS_HIT, "local"),
        (pb.CACHE_STATUS_HIT, "redis"),
        (pb.CACHE_STATUS_BYPASS, "local"),
        (pb.CACHE_STATUS_UNSPECIFIED, ""),  # ended before the cache stage: not counted
    ]:
        cache.count(status, tier)  # type: ignore[arg-type]
    s = cache.stats
    assert (s.misses, s.coalesced, s.hits, s.redis_hits, s.bypasses) == (1, 2, 2, 1, 1)
