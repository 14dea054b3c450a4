"""Configuration reload on SIGHUP: routing changes apply to new calls, running streams finish,
removed backends drain; a bad configuration changes nothing."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake, start_fake
from support.gateways import Gateway, engine_backend
from support.processes import wait_for
from support.rpc import read_stream


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Fake]]:
    fakes = [start_fake(tmp_path_factory.mktemp(f"f{i}") / "fake.log") for i in range(2)]
    yield fakes
    for fake in fakes:
        fake.stop()


def config(pair: list[Fake], backends: list[str], pool: list[str], **extra: Any) -> dict[str, Any]:
    urls = {"f0": pair[0].url, "f1": pair[1].url}
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "cache": {"enabled": False},
        "backends": [engine_backend(urls[name], name, **extra.get(name, {})) for name in backends],
        "pools": [{"name": "p", "backends": pool, "picker": "round_robin"}],
        "routes": [{"name": "r", "pool": "p"}],
    }


def reload(gateway: Gateway, new: dict[str, Any]) -> None:
    gateway.config_path.write_text(json.dumps(new))
    gateway.signal(signal.SIGHUP)


def backend_of(gateway: Gateway) -> str:
    result = read_stream(gateway.stub().GenerateStream(pb.GenerateStreamRequest(prompt="x")))
    assert result.start is not None, result.error
    return result.start.backend


def test_a_reload_moves_new_calls_and_lets_running_streams_finish(
    gateways: Callable[..., Gateway], pair: list[Fake]
) -> None:
    gateway = gateways(config(pair, ["f0", "f1"], ["f0"]), name="reload")
    assert backend_of(gateway) == "f0"
    slow = pb.GenerateStreamRequest(
        prompt="mode:normal delay=0.05", stopping=pb.StoppingCriteria(max_new_tokens=60)
    )
    running = gateway.stub().GenerateStream(slow)
    messages = iter(running)
    assert next(messages).start.backend == "f0"
    reload(gateway, config(pair, ["f1"], ["f1"]))  # f0 is removed
    wait_for(lambda: backend_of(gateway) == "f1", "new calls to go to f1")
    rest = list(messages)
    assert rest[-1].WhichOneof("event") == "end"  # not dropped by the reload
    assert sum(len(m.delta.text.split()) for m in rest if m.HasField("delta")) == 60
    wait_for(lambda: "backend removed" in gateway.logs(), "f0's session to close")
    assert "configuration reloaded" in gateway.logs()


def test_a_bad_configuration_changes_nothing(
    gateways: Callable[..., Gateway], pair: list[Fake]
) -> None:
    gateway = gateways(config(pair, ["f0"], ["f0"]), name="bad-reload")
    broken = config(pair, ["f0"], ["f0"])
    broken["routes"] = [{"name": "r", "pool": "no-such-pool"}]
    reload(gateway, broken)
    wait_for(lambda: "reload failed" in gateway.logs(), "the reload to be refused")
    assert backend_of(gateway) == "f0"


def test_a_draining_backend_takes_no_new_calls(
    gateways: Callable[..., Gateway], pair: list[Fake]
) -> None:
    gateway = gateways(config(pair, ["f0", "f1"], ["f0", "f1"]), name="drain")
    assert {backend_of(gateway) for _ in range(4)} == {"f0", "f1"}
    reload(gateway, config(pair, ["f0", "f1"], ["f0", "f1"], f1={"draining": True}))
    wait_for(lambda: {backend_of(gateway) for _ in range(4)} == {"f0"}, "f1 to stop taking calls")
