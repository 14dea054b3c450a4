"""Routing rules, sticky splits, fallback and shadow pools, and passive ejection, through a
gateway process in front of fake TGI processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake, start_fake
from support.gateways import Gateway, engine_backend
from support.processes import free_port, wait_for
from support.rpc import read_stream


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fake]]:
    started = {
        name: start_fake(tmp_path_factory.mktemp(name) / "fake.log")
        for name in ("main", "canary", "small")
    }
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, Fake], gateways: Callable[..., Gateway]) -> Gateway:
    backends = [engine_backend(f.url, name) for name, f in fakes.items()]
    backends.append(engine_backend(f"http://127.0.0.1:{free_port()}", "gone"))
    return gateways(
        {
            "backends": backends,
            "pools": [
                {"name": name, "backends": [name], "picker": "round_robin"}
                for name in ("main", "canary", "small", "gone")
            ],
            "routes": [
                {
                    "name": "llama",
                    "split": [{"pool": "main", "weight": 90}, {"pool": "canary", "weight": 10}],
                    "shadow": "small",
                },
                {"name": "down", "pool": "gone", "fallback": "small"},
            ],
            "rules": [
                {
                    "name": "beta",
                    "when": {
                        "all": [
                            {"field": "model", "equals": "llama"},
                            {"field": "x-user-id", "prefix": "beta-"},
                        ]
                    },
                    "pool": "canary",
                }
            ],
        },
        name="rules",
    )


def pool_of(gateway: Gateway, user: str | None = None, model: str = "llama") -> str:
    metadata = (("x-user-id", user),) if user else ()
    call = gateway.stub().GenerateStream(
        pb.GenerateStreamRequest(prompt="hi", model=model), metadata=metadata
    )
    result = read_stream(call)
    assert result.error is None and result.start is not None, result.error
    assert result.initial_metadata["x-pool"] == result.start.pool
    return result.start.pool


def test_a_rule_on_metadata_overrides_the_routes_target(gateway: Gateway) -> None:
    assert {pool_of(gateway, f"beta-{i}") for i in range(10)} == {"canary"}
    lines = [line for line in gateway.log_lines() if line.get("rule") == "beta"]
    assert lines and lines[-1]["pool"] == "canary"


def test_a_split_is_sticky_per_user_and_follows_the_weights(gateway: Gateway) -> None:
    first = {f"user-{i}": pool_of(gateway, f"user-{i}") for i in range(200)}
    share = sum(pool == "canary" for pool in first.values()) / len(first)
    assert 0.04 <= share <= 0.16  # 10% +- 6 points on 200 users (2,000 in the unit tests)
    for user in list(first)[:40]:
        assert pool_of(gateway, user) == first[user]


def test_the_fallback_pool_serves_when_the_primary_has_no_healthy_replica(
    gateway: Gateway,
) -> None:
    assert pool_of(gateway, model="down") == "small"


def test_the_shadow_pool_gets_a_copy_whose_output_is_discarded(
    gateway: Gateway, fakes: dict[str, Fake]
) -> None:
    before = fakes["small"].stats()["requests"]
    for i in range(5):
        pool_of(gateway, f"shadowed-{i}")
    wait_for(
        lambda: fakes["small"].stats()["requests"] >= before + 5, "the shadow copies to arrive"
    )
    wait_for(
        lambda: (
            gateway.metrics().get('streamgate_shadow_requests_total{pool="small",result="ok"}', 0)
            >= 5
        ),
        "the shadow copies to be counted",
    )


def test_failures_open_the_circuit_and_a_probe_closes_it(
    gateways: Callable[..., Gateway], tmp_path: Path
) -> None:
    flaky = start_fake(tmp_path / "flaky.log")
    steady = start_fake(tmp_path / "steady.log")
    port = str(urlsplit(flaky.url).port)
    try:
        gateway = gateways(
            {
                "backends": [
                    engine_backend(
                        flaky.url,
                        "flaky",
                        health_interval_seconds=30,  # passive ejection alone, in this test
                        circuit={"failures": 2, "open_seconds": 1.0},
                    ),
                    engine_backend(steady.url, "steady", health_interval_seconds=30),
                ],
                "pools": [{"name": "p", "backends": ["flaky", "steady"], "picker": "round_robin"}],
                "routes": [{"name": "r", "pool": "p"}],
            },
            name="circuit",
        )
        flaky.stop()
        # Calls still succeed (retried on `steady` before any token) while `flaky` fails.
        for _ in range(6):
            assert pool_of(gateway, model="r") == "p"
        assert gateway.metrics()['streamgate_backend_ejections_total{backend="flaky"}'] >= 1
        flaky = start_fake(tmp_path / "flaky-again.log", "--port", port)

        def back_in_use() -> bool:
            result = read_stream(gateway.stub().GenerateStream(pb.GenerateStreamRequest(
                prompt="hi", model="r")))  # fmt: skip
            return result.start is not None and result.start.backend == "flaky"

        wait_for(back_in_use, "a probe to close the circuit")
    finally:
        flaky.stop()
        steady.stop()
