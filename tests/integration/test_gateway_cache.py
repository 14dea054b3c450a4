"""The exact response cache through a gateway process (backend: the fake TGI, a process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from test_gateway_support import Fake, Gateway, engine_backend, expect_failure, read_stream

from streamgate.api.v1 import generation_pb2 as pb
from streamgate.tenancy import hash_key

KEYS = {"a": "sg-cache-a-0123456789", "b": "sg-cache-b-0123456789", "c": "sg-cache-c-012345678"}


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
