"""The exact response cache through a gateway process (backend: the fake TGI, a process)."""

from __future__ import annotations

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
from support.rpc import expect_failure, failure, read_stream

KEYS = {
    "a": "sg-cache-a-0123456789",
    "b": "sg-cache-b-0123456789",
    "c": "sg-cache-c-012345678",
    "ops": "sg-cache-ops-01234567",
}


@pytest.fixture(scope="module")
def gateway(fake: Fake, gateways: Callable[..., Gateway]) -> Gateway:
    tenants = [
        {"name": "a", "keys": [{"name": "k", "sha256": hash_key(KEYS["a"])}]},
        {"name": "b", "keys": [{"name": "k", "sha256": hash_key(KEYS["b"])}]},
        # c shares a's namespace by configuration
        {
            "name": "c",
            "keys": [{"name": "k", "sha256": hash_key(KEYS["c"])}],
            "cache_namespace": "tenant:a",
        },
        {"name": "ops", "keys": [{"name": "k", "sha256": hash_key(KEYS["ops"])}], "admin": True},
    ]
    return gateways(
        {
            "backends": [engine_backend(fake.url, "fake")],
            "auth": {"enabled": True},
            "tenants": tenants,
            "cache": {"enabled": True},
        },
        name="cache",
    )


def stream(gateway: Gateway, prompt: str, tenant: str = "a", **fields: Any) -> Any:
    request = pb.GenerateStreamRequest(
        prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=5), **fields
    )
    metadata = (("authorization", f"Bearer {KEYS[tenant]}"),)
    return read_stream(gateway.stub().GenerateStream(request, metadata=metadata))


def admin(gateway: Gateway) -> admin_grpc.AdminServiceStub:
    return admin_grpc.AdminServiceStub(gateway.channel())


def as_tenant(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {KEYS[name]}"),)


def requests_seen(fake: Fake) -> int:
    count: int = fake.stats()["requests"]
    return count


def test_a_greedy_answer_is_replayed_as_the_same_stream(gateway: Gateway, fake: Fake) -> None:
    first = stream(gateway, "cache me")
    before = requests_seen(fake)
    second = stream(gateway, "cache me")
    assert requests_seen(fake) == before  # no backend call
    assert first.start.cache_status == pb.CACHE_STATUS_MISS
    assert second.start.cache_status == pb.CACHE_STATUS_HIT
    assert second.initial_metadata["x-cache-status"] == "HIT"
    assert [d.text for d in second.deltas] == [d.text for d in first.deltas]  # step by step
    assert second.end.usage == first.end.usage
    assert second.end.finish_reason == first.end.finish_reason
    assert (second.start.backend, second.start.model) == (first.start.backend, first.start.model)


def test_unary_generate_hits_too(gateway: Gateway, fake: Fake) -> None:
    metadata = (("authorization", f"Bearer {KEYS['a']}"),)
    request = pb.GenerateRequest(prompt="unary", stopping=pb.StoppingCriteria(max_new_tokens=3))
    first = gateway.stub().Generate(request, metadata=metadata)
    before = requests_seen(fake)
    second = gateway.stub().Generate(request, metadata=metadata)
    assert requests_seen(fake) == before
    assert second.start.cache_status == pb.CACHE_STATUS_HIT and second.text == first.text


def test_sampling_is_stored_only_with_a_seed(gateway: Gateway) -> None:
    sampled = pb.SamplingParameters(do_sample=True, temperature=0.7)
    stream(gateway, "sampled", sampling=sampled)
    again = stream(gateway, "sampled", sampling=sampled)
    assert again.start.cache_status == pb.CACHE_STATUS_MISS
    seeded = pb.SamplingParameters(do_sample=True, temperature=0.7, seed=5)
    stream(gateway, "seeded", sampling=seeded)
    assert stream(gateway, "seeded", sampling=seeded).start.cache_status == pb.CACHE_STATUS_HIT


def test_cache_modes(gateway: Gateway) -> None:
    bypass = pb.CacheControl(mode=pb.CACHE_MODE_BYPASS)
    assert stream(gateway, "modes", cache=bypass).start.cache_status == pb.CACHE_STATUS_BYPASS
    only = pb.CacheControl(mode=pb.CACHE_MODE_ONLY_IF_CACHED)
    missing = stream(gateway, "modes", cache=only)
    assert missing.error is not None and missing.error.reason == "NOT_CACHED"
    assert missing.error.code == grpc.StatusCode.NOT_FOUND
    no_store = pb.CacheControl(mode=pb.CACHE_MODE_NO_STORE)
    stream(gateway, "modes", cache=no_store)
    assert stream(gateway, "modes", cache=only).error is not None  # still not stored
    stream(gateway, "modes")
    assert stream(gateway, "modes", cache=only).start.cache_status == pb.CACHE_STATUS_HIT


def test_failed_streams_are_not_stored(gateway: Gateway, fake: Fake) -> None:
    prompt = "mode:error_mid_stream after=2"
    assert stream(gateway, prompt).error is not None
    before = requests_seen(fake)
    assert stream(gateway, prompt).error is not None
    assert requests_seen(fake) == before + 1  # generated again: nothing was cached


def test_tenants_never_see_each_others_entries(gateway: Gateway, fake: Fake) -> None:
    stream(gateway, "secret of a", tenant="a")
    assert stream(gateway, "secret of a", tenant="b").start.cache_status == pb.CACHE_STATUS_MISS
    # Tenant c is configured into a's namespace: it shares a's entries.
    assert stream(gateway, "secret of a", tenant="c").start.cache_status == pb.CACHE_STATUS_HIT
    # A request namespace narrows the scope; it never reaches another tenant's entries.
    scoped = pb.CacheControl(namespace="team")
    stream(gateway, "scoped", tenant="a", cache=scoped)
    assert (
        stream(gateway, "scoped", tenant="b", cache=scoped).start.cache_status
        == pb.CACHE_STATUS_MISS
    )
    logs = gateway.logs()
    assert "secret of a" not in logs  # prompts (and so cached values) are not logged


def test_cache_metrics(gateway: Gateway) -> None:
    metrics = gateway.metrics()
    assert metrics['streamgate_cache_requests_total{result="hit",tier="local"}'] >= 1
    assert metrics['streamgate_cache_requests_total{result="miss",tier="local"}'] >= 1
    assert metrics['streamgate_cache_entries{tier="local"}'] >= 1
    unknown = expect_failure(
        lambda: gateway.stub().Generate(pb.GenerateRequest(prompt="x"), metadata=())
    )
    assert unknown.code == grpc.StatusCode.UNAUTHENTICATED  # the cache is behind auth


# ---- single-flight coalescing -------------------------------------------------------------------

SLOW = "mode:normal delay=0.05"  # 20 tokens a second: identical calls overlap


def start_calls(gateway: Gateway, prompt: str, n: int, tokens: int = 20) -> list[Any]:
    """`n` identical calls, each past its Start (so all have joined the one generation)."""
    request = pb.GenerateStreamRequest(
        prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=tokens)
    )
    metadata = (("authorization", f"Bearer {KEYS['a']}"),)
    stub = gateway.stub()
    calls = []
    for _ in range(n):
        call = stub.GenerateStream(request, metadata=metadata)
        messages = iter(call)
        start = next(messages)
        assert start.WhichOneof("event") == "start"
        calls.append((call, messages, start.start))
    return calls


def finish(messages: Any) -> tuple[int, pb.End | None, str]:
    """Read the rest of a started call: (deltas, End, error reason)."""
    deltas, end = 0, None
    try:
        for message in messages:
            if message.HasField("delta"):
                deltas += 1
            elif message.HasField("end"):
                end = message.end
    except grpc.RpcError as err:
        return deltas, None, failure(err).reason
    return deltas, end, ""


def cache_outcomes(gateway: Gateway) -> tuple[admin_pb.GetCacheStatsResponse, dict[str, float]]:
    """GetCacheStats, and the outcome counters of /metrics by result."""
    stats = admin(gateway).GetCacheStats(admin_pb.GetCacheStatsRequest(), metadata=as_tenant("ops"))
    prefix = "streamgate_cache_requests_total{result="
    counters: dict[str, float] = {}
    for name, value in gateway.metrics().items():
        if name.startswith(prefix):
            result = name[len(prefix) :].split('"')[1]
            counters[result] = counters.get(result, 0.0) + value
    return stats, counters


def test_identical_requests_share_one_generation(gateway: Gateway, fake: Fake) -> None:
    before = requests_seen(fake)
    stats_before, counted_before = cache_outcomes(gateway)
    calls = start_calls(gateway, f"{SLOW} shared", 10)
    results = [finish(messages) for _, messages, _ in calls]
    assert requests_seen(fake) == before + 1  # one backend generation for 10 callers
    # Each call has one outcome: 1 miss (the generation) and 9 coalesced, in both counts.
    stats, counted = cache_outcomes(gateway)
    assert (stats.misses - stats_before.misses, stats.coalesced - stats_before.coalesced) == (1, 9)
    assert counted["miss"] - counted_before.get("miss", 0) == 1
    assert counted["coalesced"] - counted_before.get("coalesced", 0) == 9
    assert [start.cache_status for _, _, start in calls] == [pb.CACHE_STATUS_MISS] + [
        pb.CACHE_STATUS_COALESCED
    ] * 9
    for deltas, end, error in results:  # every step, from the start
        assert (deltas, error) == (20, "") and end is not None
        assert (end.usage, end.finish_reason) == (results[0][1].usage, results[0][1].finish_reason)


def test_a_follower_leaving_and_the_leader_leaving_do_not_stop_the_others(
    gateway: Gateway, fake: Fake
) -> None:
    before = requests_seen(fake)
    (leader, _, _), (quitter, _, _), *stayers = start_calls(gateway, f"{SLOW} carry on", 4)
    quitter.cancel()
    leader.cancel()
    for _, messages, _ in stayers:
        deltas, end, error = finish(messages)
        assert (deltas, error) == (20, "") and end is not None
    assert requests_seen(fake) == before + 1


def test_when_everybody_leaves_the_backend_stream_is_closed(gateway: Gateway, fake: Fake) -> None:
    disconnects = fake.stats()["disconnects"]
    calls = start_calls(gateway, f"{SLOW} everybody leaves", 3, tokens=400)
    for call, _, _ in calls:
        call.cancel()
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the backend stream to close")


def test_a_failure_reaches_every_caller(gateway: Gateway) -> None:
    calls = start_calls(gateway, "mode:error_mid_stream after=10 delay=0.05", 3)
    reasons = {finish(messages)[2] for _, messages, _ in calls}
    assert reasons == {"BACKEND_GENERATION_FAILED"}


def unary_futures(gateway: Gateway, prompt: str, n: int, tokens: int = 20) -> list[Any]:
    request = pb.GenerateRequest(prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=tokens))
    stub = gateway.stub()
    return [stub.Generate.future(request, metadata=as_tenant("a")) for _ in range(n)]


def test_unary_calls_coalesce_with_streams_and_each_other(gateway: Gateway, fake: Fake) -> None:
    before = requests_seen(fake)
    [(_, messages, start)] = start_calls(gateway, f"{SLOW} unary joins", 1)
    futures = unary_futures(gateway, f"{SLOW} unary joins", 4)
    deltas, end, error = finish(messages)
    responses = [f.result(timeout=60) for f in futures]
    assert requests_seen(fake) == before + 1
    assert start.cache_status == pb.CACHE_STATUS_MISS and (deltas, error) == (20, "")
    assert end is not None
    for response in responses:
        assert response.start.cache_status == pb.CACHE_STATUS_COALESCED
        assert response.end.usage == end.usage and len(response.text) > 0
    assert len({r.text for r in responses}) == 1
    # A unary call leads too: streams and unary calls join it.
    before = requests_seen(fake)
    [leader] = unary_futures(gateway, f"{SLOW} unary leads", 1)
    wait_for(lambda: requests_seen(fake) == before + 1, "the unary leader's backend request")
    followers = start_calls(gateway, f"{SLOW} unary leads", 2)
    results = [finish(messages) for _, messages, _ in followers]
    assert [s.cache_status for _, _, s in followers] == [pb.CACHE_STATUS_COALESCED] * 2
    assert all((d, e) == (20, "") for d, _, e in results)
    assert leader.result(timeout=60).start.cache_status == pb.CACHE_STATUS_MISS
    assert requests_seen(fake) == before + 1


def test_a_generation_carried_on_keeps_its_upstream_slot(gateway: Gateway, fake: Fake) -> None:
    def upstream_streams() -> float:
        return gateway.metrics()["streamgate_upstream_streams"]

    wait_for(lambda: upstream_streams() == 0, "no generation under way")
    logged = len(gateway.log_lines())
    [leader] = unary_futures(gateway, f"{SLOW} unary carried on", 1, tokens=120)
    wait_for(lambda: upstream_streams() == 1, "the leader's generation")
    [(_, messages, start)] = start_calls(gateway, f"{SLOW} unary carried on", 1, tokens=120)
    assert start.cache_status == pb.CACHE_STATUS_COALESCED
    leader.cancel()

    def leader_ended() -> bool:
        return any(
            line.get("code") == "CANCELLED" and line.get("method") == "Generate"
            for line in gateway.log_lines()[logged:]
        )

    wait_for(leader_ended, "the gateway to see the leader leave")
    next(messages)  # the generation goes on for the follower...
    assert upstream_streams() == 1  # ...and still holds its slot
    _, end, error = finish(messages)
    assert error == "" and end is not None and end.usage.completion_tokens == 120
    wait_for(lambda: upstream_streams() == 0, "the slot to be released at the end")


# ---- the admin service --------------------------------------------------------------------------


def test_the_admin_service_needs_an_admin_key(gateway: Gateway) -> None:
    stats = admin_pb.GetCacheStatsRequest()
    err = expect_failure(lambda: admin(gateway).GetCacheStats(stats, metadata=as_tenant("a")))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ADMIN")
    err = expect_failure(lambda: admin(gateway).GetCacheStats(stats))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


def test_stats_and_invalidation(gateway: Gateway) -> None:
    stub = admin(gateway)
    stream(gateway, "to invalidate", tenant="a")
    stream(gateway, "to keep", tenant="b")
    stats = stub.GetCacheStats(admin_pb.GetCacheStatsRequest(), metadata=as_tenant("ops"))
    assert stats.enabled and stats.entries >= 2 and stats.hits >= 1 and stats.redis == "disabled"
    removed = stub.InvalidateCache(
        admin_pb.InvalidateCacheRequest(tenant="a"), metadata=as_tenant("ops")
    ).removed
    assert removed >= 1
    assert stream(gateway, "to invalidate", tenant="a").start.cache_status == pb.CACHE_STATUS_MISS
    assert stream(gateway, "to keep", tenant="b").start.cache_status == pb.CACHE_STATUS_HIT
    bad = expect_failure(
        lambda: stub.InvalidateCache(
            admin_pb.InvalidateCacheRequest(key="xyz"), metadata=as_tenant("ops")
        )
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and bad.violations[0][0] == "key"
    stub.InvalidateCache(admin_pb.InvalidateCacheRequest(all=True), metadata=as_tenant("ops"))
    after = stub.GetCacheStats(admin_pb.GetCacheStatsRequest(), metadata=as_tenant("ops"))
    assert after.entries == 0 and after.bytes == 0


def test_a_sampled_answer_is_stored_when_the_request_opts_in(gateway: Gateway) -> None:
    sampled = pb.SamplingParameters(do_sample=True, temperature=0.7)
    opt_in = pb.CacheControl(store_sampled=True)
    stream(gateway, "opted in", sampling=sampled, cache=opt_in)
    again = stream(gateway, "opted in", sampling=sampled, cache=opt_in)
    assert again.start.cache_status == pb.CACHE_STATUS_HIT
