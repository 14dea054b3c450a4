"""Starting and stopping: the embedded engine (started, served, never orphaned) and graceful
shutdown (running streams finish within the grace period, new calls are refused, the rest is
interrupted with UNAVAILABLE once the grace period is over)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake
from support.gateways import SERVICE, STARTUP_TIMEOUT, Gateway, engine_backend, gateway_pool
from support.processes import pid_alive, wait_for
from support.rpc import expect_failure, failure, read_stream

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TINY = {"embedded": {"model": "tiny"}}  # the built-in model: these tests are about processes


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    with gateway_pool(tmp_path) as start:
        yield start


# ---- the embedded engine ------------------------------------------------------------------------


def test_embedded_engine_serves_and_stops_with_the_gateway(
    gateways: Callable[..., Gateway],
) -> None:
    gateway = gateways(TINY)  # no backends: the embedded engine, route `tiny`
    pid = gateway.embedded_engine()[0]
    assert pid_alive(pid)
    stub = gateway.stub()
    [model] = stub.ListModels(pb.ListModelsRequest()).models
    assert (model.name, model.default, list(model.backend_models)) == ("tiny", True, ["tiny"])
    assert model.max_total_tokens > 0
    request = pb.GenerateStreamRequest(
        prompt="Hello", stopping=pb.StoppingCriteria(max_new_tokens=5)
    )
    result = read_stream(stub.GenerateStream(request))
    assert result.error is None and result.start is not None and result.end is not None
    assert (result.start.route, result.start.backend, result.start.model) == (
        "tiny",
        "embedded",
        "tiny",
    )
    assert 1 <= len(result.deltas) <= 5  # the tiny model may reach EOS early
    assert result.end.usage.completion_tokens == len(result.deltas)
    # The route's default max_new_tokens applies (embedded.max_new_tokens, 256).
    chat = pb.Messages(messages=[pb.Message(role="user", content="Hi")])
    assert stub.Generate(pb.GenerateRequest(chat=chat)).end.usage.completion_tokens <= 256
    assert gateway.health(SERVICE) == health_pb2.HealthCheckResponse.SERVING

    assert gateway.stop() == 0
    wait_for(lambda: not pid_alive(pid), "the engine to stop with the gateway")


def test_engine_dies_with_a_killed_gateway(gateways: Callable[..., Gateway]) -> None:
    gateway = gateways({"embedded": {"model": "tiny", "args": ["--max-total-tokens", "256"]}})
    pid = gateway.embedded_engine()[0]
    gateway.signal(signal.SIGKILL)  # no chance to clean up: the kernel must do it
    gateway.wait_exit()
    wait_for(lambda: not pid_alive(pid), "the orphaned engine to be killed")


def test_an_engine_that_fails_to_start_is_reported(tmp_path: Path) -> None:
    # An engine flag it refuses: the gateway shows the engine's output and exits with 2.
    config = '{"embedded": {"model": "tiny", "args": ["--max-total-tokens", "many"]}}'
    done = run_to_exit(tmp_path, config)
    assert done.returncode == 2
    assert "the embedded engine exited with code" in done.stderr
    assert "max-total-tokens" in done.stderr


# ---- graceful shutdown --------------------------------------------------------------------------


def slow_stream(gateway: Gateway, tokens: int) -> Iterator[pb.GenerateStreamResponse]:
    request = pb.GenerateStreamRequest(prompt=f"mode:normal tokens={tokens} delay=0.05")
    call = gateway.stub().GenerateStream(request)
    messages = iter(call)
    assert next(messages).WhichOneof("event") == "start"
    assert next(messages).WhichOneof("event") == "delta"
    return messages


def test_shutdown_lets_running_streams_finish(gateways: Callable[..., Gateway], fake: Fake) -> None:
    gateway = gateways(
        {
            "backends": [engine_backend(fake.url, "fake")],
            "limits": {"shutdown_grace_seconds": 60},
        }
    )
    stub = gateway.stub()
    messages = slow_stream(gateway, 100)  # 5 s of tokens
    gateway.signal(signal.SIGTERM)
    wait_for(lambda: gateway.health("") == NOT_SERVING, "health to turn NOT_SERVING")
    assert gateway.health(SERVICE) == NOT_SERVING
    # New calls are refused while the running stream goes on.
    err = expect_failure(lambda: stub.Generate(pb.GenerateRequest(prompt="x")))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
    assert err.retry_delay is not None
    err = expect_failure(lambda: stub.ListModels(pb.ListModelsRequest()))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    rest = list(messages)
    assert rest[-1].WhichOneof("event") == "end"
    assert rest[-1].end.usage.completion_tokens == 100
    assert gateway.wait_exit() == 0


def test_shutdown_interrupts_streams_after_the_grace_period(
    gateways: Callable[..., Gateway], fake: Fake
) -> None:
    gateway = gateways(
        {
            "backends": [engine_backend(fake.url, "fake")],
            "limits": {"shutdown_grace_seconds": 0.5},
        }
    )
    disconnects = fake.stats()["disconnects"]
    messages = slow_stream(gateway, 4000)  # 200 s of tokens
    gateway.signal(signal.SIGTERM)
    delivered = 1
    with pytest.raises(grpc.RpcError) as caught:
        for message in messages:
            delivered += message.WhichOneof("event") == "delta"
    err = failure(caught.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
    assert int(err.metadata["tokens_sent"]) >= delivered > 1
    assert err.retry_delay is not None
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the upstream to be closed")
    assert gateway.wait_exit() == 0


def run_to_exit(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "streamgate", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )


def test_bad_config_exits_with_code_2(tmp_path: Path) -> None:
    done = run_to_exit(tmp_path, "listen: {port: 70000}\nbogus: 1\n")
    assert done.returncode == 2
    assert "listen.port" in done.stderr and "bogus: Extra inputs are not permitted" in done.stderr
