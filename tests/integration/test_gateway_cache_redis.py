"""The shared cache tier through two gateway processes and a real redis-server (backend: the
fake TGI): one gateway's answers replayed by the other, invalidation in both tiers, and Redis
outages that requests do not feel."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from streamgate.tenancy import hash_key
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import admin_pb2_grpc as admin_grpc
from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake
from support.gateways import Gateway, engine_backend
from support.processes import wait_for
from support.redis_server import RedisServer
from support.rpc import read_stream

KEYS = {"a": "sg-shared-a-0123456789", "b": "sg-shared-b-0123456789", "ops": "sg-shared-ops-012345"}
TIMEOUT_SECONDS = 0.1


def config(fake: Fake, redis: RedisServer) -> dict[str, Any]:
    tenants = [
        {"name": "a", "keys": [{"name": "k", "sha256": hash_key(KEYS["a"])}]},
        {"name": "b", "keys": [{"name": "k", "sha256": hash_key(KEYS["b"])}]},
        {"name": "ops", "keys": [{"name": "k", "sha256": hash_key(KEYS["ops"])}], "admin": True},
    ]
    return {
        "backends": [engine_backend(fake.url, "fake")],
        "auth": {"enabled": True},
        "tenants": tenants,
        "cache": {
            "enabled": True,
            "redis": {
                "url": redis.url,
                "timeout_seconds": TIMEOUT_SECONDS,
                "reconnect_seconds": 0.2,
            },
        },
    }


@pytest.fixture(scope="module")
def pair(
    fake: Fake, redis: RedisServer, gateways: Callable[..., Gateway]
) -> tuple[Gateway, Gateway]:
    """Two gateways of one fleet: same config, same Redis."""
    return gateways(config(fake, redis), name="first"), gateways(config(fake, redis), name="second")


def stream(gateway: Gateway, prompt: str, tenant: str = "a", **fields: Any) -> Any:
    request = pb.GenerateStreamRequest(
        prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=5), **fields
    )
    metadata = (("authorization", f"Bearer {KEYS[tenant]}"),)
    return read_stream(gateway.stub().GenerateStream(request, metadata=metadata))


def cached(gateway: Gateway, prompt: str, tenant: str = "a") -> Any:
    """The gateway's cached answer (only_if_cached), once the write-through has landed."""
    only = pb.CacheControl(mode=pb.CACHE_MODE_ONLY_IF_CACHED)
    result: Any = None

    def found() -> bool:
        nonlocal result
        result = stream(gateway, prompt, tenant, cache=only)
        return result.error is None

    wait_for(found, f"'{prompt}' to be in the shared tier")
    return result


def requests_seen(fake: Fake) -> int:
    count: int = fake.stats()["requests"]
    return count


def admin(gateway: Gateway) -> admin_grpc.AdminServiceStub:
    return admin_grpc.AdminServiceStub(gateway.channel())


OPS = (("authorization", f"Bearer {KEYS['ops']}"),)


def stats(gateway: Gateway) -> admin_pb.GetCacheStatsResponse:
    return admin(gateway).GetCacheStats(admin_pb.GetCacheStatsRequest(), metadata=OPS)


def test_a_second_gateway_replays_the_first_ones_answer(
    pair: tuple[Gateway, Gateway], fake: Fake
) -> None:
    first, second = pair
    original = stream(first, "shared answer")
    assert original.start.cache_status == pb.CACHE_STATUS_MISS
    before = requests_seen(fake)
    replay = cached(second, "shared answer")
    assert requests_seen(fake) == before  # no backend call
    assert replay.start.cache_status == pb.CACHE_STATUS_HIT
    assert replay.initial_metadata["x-cache-tier"] == "redis"
    assert [d.text for d in replay.deltas] == [d.text for d in original.deltas]
    assert replay.end.usage == original.end.usage
    # The Redis hit filled the second gateway's local tier.
    again = stream(second, "shared answer")
    assert again.initial_metadata["x-cache-tier"] == "local"
    assert stats(second).redis == "up" and stats(second).redis_hits >= 1
    metrics = second.metrics()
    assert metrics['streamgate_cache_requests_total{result="hit",tier="redis"}'] >= 1
    assert metrics["streamgate_cache_redis_up"] == 1
    assert metrics['streamgate_cache_redis_seconds_count{op="get"}'] >= 1


def test_tenants_stay_isolated_across_gateways(
    pair: tuple[Gateway, Gateway], redis: RedisServer
) -> None:
    first, second = pair
    stream(first, "a's secret", tenant="a")
    cached(second, "a's secret", tenant="a")  # in Redis now
    other = stream(second, "a's secret", tenant="b")
    assert other.start.cache_status == pb.CACHE_STATUS_MISS
    keys = [
        k.removeprefix("streamgate:e:") for k in redis.command("KEYS", "streamgate:e:*").split()
    ]
    assert keys
    for gateway in pair:
        logs = gateway.logs()
        assert "a's secret" not in logs  # prompts and cached values are not logged
        assert not [k for k in keys if k in logs]  # nor cache keys


def test_invalidation_reaches_the_shared_tier(pair: tuple[Gateway, Gateway]) -> None:
    first, second = pair
    stream(first, "to forget", tenant="a")
    stream(first, "to remember", tenant="b")
    cached(second, "to remember", tenant="b")  # both written through by now
    removed = admin(first).InvalidateCache(
        admin_pb.InvalidateCacheRequest(tenant="a"), metadata=OPS
    )
    assert removed.removed >= 1 and removed.shared_removed >= 1
    # The second gateway never read "to forget": Redis no longer has it.
    assert stream(second, "to forget", tenant="a").start.cache_status == pb.CACHE_STATUS_MISS
    remembered = stream(second, "to remember", tenant="b")
    assert remembered.start.cache_status == pb.CACHE_STATUS_HIT


def test_an_invalidation_reaches_the_other_gateways_local_tiers(
    pair: tuple[Gateway, Gateway],
) -> None:
    first, second = pair
    stream(first, "everywhere", tenant="b")
    cached(second, "everywhere", tenant="b")  # now in the second gateway's local tier too
    assert stream(second, "everywhere", tenant="b").initial_metadata["x-cache-tier"] == "local"
    admin(first).InvalidateCache(admin_pb.InvalidateCacheRequest(tenant="b"), metadata=OPS)
    only = pb.CacheControl(mode=pb.CACHE_MODE_ONLY_IF_CACHED)
    wait_for(
        lambda: stream(second, "everywhere", tenant="b", cache=only).error is not None,
        "the second gateway to drop its copy",
    )


def test_requests_go_on_through_a_redis_outage(
    pair: tuple[Gateway, Gateway], redis: RedisServer, fake: Fake
) -> None:
    first, second = pair
    redis.stop()
    try:
        for n in range(3):
            result = stream(first, f"during the outage {n}")
            assert result.error is None and result.start.cache_status == pb.CACHE_STATUS_MISS
        wait_for(lambda: stats(first).redis == "down", "the shared tier to be marked down")
        assert stats(first).redis_errors >= 1
        assert first.metrics()["streamgate_cache_redis_up"] == 0
        assert "shared cache tier unavailable" in first.logs()
        # The local tier still serves what it has.
        again = stream(first, "during the outage 0")
        assert again.start.cache_status == pb.CACHE_STATUS_HIT
    finally:
        redis.start()
    wait_for(lambda: stats(first).redis == "up", "the shared tier to reconnect")
    assert "shared cache tier reconnected" in first.logs()
    stream(first, "after the outage")
    replay = cached(second, "after the outage")
    assert replay.initial_metadata["x-cache-tier"] == "redis"


def test_a_stalled_redis_costs_a_request_at_most_the_timeout(
    pair: tuple[Gateway, Gateway], redis: RedisServer
) -> None:
    _, second = pair
    wait_for(lambda: stats(second).redis == "up", "the shared tier to be up")
    pause = 10.0
    redis.command("CLIENT", "PAUSE", str(int(pause * 1000)), "ALL")
    paused_at = time.monotonic()
    result = stream(second, "while redis is stalled")
    # The lookup gave up after its bound, not when Redis answered again.
    assert result.error is None and result.start.cache_status == pb.CACHE_STATUS_MISS
    assert time.monotonic() - paused_at < pause / 2
    assert stats(second).redis == "down"
    redis.command("CLIENT", "UNPAUSE")
    wait_for(lambda: stats(second).redis == "up", "the shared tier to come back")


def test_an_admin_invalidation_during_an_outage_says_so(
    pair: tuple[Gateway, Gateway], redis: RedisServer
) -> None:
    first, _ = pair
    redis.stop()
    try:
        stream(first, "trigger the outage")
        wait_for(lambda: stats(first).redis == "down", "the shared tier to be marked down")
        with pytest.raises(grpc.RpcError) as caught:
            admin(first).InvalidateCache(admin_pb.InvalidateCacheRequest(all=True), metadata=OPS)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert stats(first).entries == 0  # the local tier was cleared regardless
    finally:
        redis.start()
    wait_for(lambda: stats(first).redis == "up", "the shared tier to reconnect")
