"""Replica choice with several real engine processes: scraped load, prefix affinity."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from streamgate_client.v1 import generation_pb2 as pb
from support.gateways import Gateway, engine_backend
from support.processes import wait_for
from support.rpc import read_stream


@pytest.fixture(scope="module")
def pair(module_engines: Callable[..., Any]) -> list[Any]:
    return [module_engines(), module_engines()]


def gateway_for(gateways: Callable[..., Gateway], pair: list[Any], picker: str) -> Gateway:
    return gateways(
        {
            "backends": [
                engine_backend(e.url, f"e{i}", load_interval_seconds=0.2)
                for i, e in enumerate(pair)
            ],
            "pools": [{"name": "main", "backends": ["e0", "e1"], "picker": picker}],
            "routes": [{"name": "tiny", "pool": "main", "max_new_tokens": 4}],
        },
        name=picker,
    )


def backend_of(gateway: Gateway, prompt: str) -> str:
    result = read_stream(gateway.stub().GenerateStream(pb.GenerateStreamRequest(prompt=prompt)))
    assert result.error is None and result.start is not None, result.error
    assert result.start.pool == "main"
    return result.start.backend


@contextmanager
def busy(engine: Any) -> Iterator[None]:
    """Four long generations sent to `engine` directly, around the gateway."""
    prompt = engine.long_running_prompt(400)
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 400}}).encode()
    responses: list[Any] = []
    lock = threading.Lock()

    def stream() -> None:
        request = urllib.request.Request(
            engine.url + "/generate_stream", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        resp = urllib.request.urlopen(request, timeout=120)
        resp.readline()
        with lock:
            responses.append(resp)

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    yield
    for resp in responses:
        resp.close()
    wait_for(engine.idle, "e0 to drop the direct requests")


def test_least_load_sees_the_backends_own_load(
    gateways: Callable[..., Gateway], pair: list[Any]
) -> None:
    gateway = gateway_for(gateways, pair, "least_load")
    # The gateway is up first: e0's generations last a second or two, its start may not.
    with busy(pair[0]):
        wait_for(
            lambda: gateway.metrics().get('streamgate_backend_load{backend="e0"}', 0) >= 4,
            "the gateway to scrape e0's load",
        )
        assert {backend_of(gateway, f"question {i}") for i in range(4)} == {"e1"}


def test_prefix_affinity_keeps_each_prefix_on_one_replica(
    gateways: Callable[..., Gateway], pair: list[Any]
) -> None:
    gateway = gateway_for(gateways, pair, "prefix_affinity")
    hits_before = [e.metrics()["streamgate_engine_prefix_cache_hit_tokens_total"] for e in pair]
    homes: dict[int, set[str]] = {}
    for n in range(12):
        tenant = n % 4
        system = f"You are assistant number {tenant}. " * 12  # ~400 bytes: 3 blocks
        homes.setdefault(tenant, set()).add(backend_of(gateway, f"{system}Question {n}?"))
    assert all(len(h) == 1 for h in homes.values()), homes
    assert set().union(*homes.values()) == {"e0", "e1"}  # misses spread by load
    hits = [e.metrics()["streamgate_engine_prefix_cache_hit_tokens_total"] for e in pair]
    assert all(after > before for after, before in zip(hits, hits_before, strict=True))


def test_failover_when_a_replica_is_killed_mid_load(
    gateways: Callable[..., Gateway], start_engine: Callable[..., Any]
) -> None:
    """Calls that had no token yet are retried elsewhere and succeed; calls cut mid-stream end
    with UNAVAILABLE and the number of tokens they got."""
    victim, survivor = start_engine(), start_engine()
    prompt = victim.long_running_prompt(48)
    gateway = gateways(
        {
            "backends": [
                engine_backend(victim.url, "victim", circuit={"failures": 2}),
                engine_backend(survivor.url, "survivor"),
            ],
            "pools": [{"name": "p", "backends": ["victim", "survivor"], "picker": "round_robin"}],
            "routes": [{"name": "tiny", "pool": "p", "max_new_tokens": 48}],
        },
        name="failover",
    )
    stub = gateway.stub()
    outcomes: list[tuple[int, Any]] = []
    lock = threading.Lock()
    started = threading.Event()

    def client() -> None:
        for _ in range(8):
            result = read_stream(stub.GenerateStream(pb.GenerateStreamRequest(prompt=prompt)))
            with lock:
                outcomes.append((len(result.deltas), result.error))
                if len(outcomes) >= 6:
                    started.set()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    assert started.wait(120)
    victim.process.kill()
    for thread in threads:
        thread.join(300)
    failed = [(tokens, err) for tokens, err in outcomes if err is not None]
    assert len(outcomes) == 48
    for tokens, err in failed:
        assert tokens > 0  # a call without a token was never failed: it went elsewhere
        assert err.code.name == "UNAVAILABLE"
        assert err.metadata["tokens_sent"] == str(tokens)
    assert len(failed) < len(outcomes)
    assert gateway.metrics()['streamgate_backend_ejections_total{backend="victim"}'] >= 1
