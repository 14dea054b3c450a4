"""Every error of the table in docs/api.md, with its google.rpc details, against fake TGI
backends that fail on demand (and a backend that is down)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake, start_fake
from support.gateways import SERVICE, Gateway, engine_backend, gateway_pool, start_gateway
from support.processes import free_port, wait_for
from support.rpc import RpcFailure, expect_failure, read_stream


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    with gateway_pool(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def overloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    """A fake whose every stream is an in-stream `overloaded` error."""
    fake = start_fake(tmp_path_factory.mktemp("over") / "fake.log", "--mode", "overloaded")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(
    fake: Fake, overloaded: Fake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = {
        "backends": [
            engine_backend(fake.url, "fake"),
            engine_backend(overloaded.url, "over"),
            engine_backend(f"http://127.0.0.1:{free_port()}", "dead"),
            # The same fake, with an idle timeout that a silent stream exceeds.
            engine_backend(fake.url, "idle", idle_timeout_seconds=0.5),
        ],
        "routes": [
            {"name": "fake", "backends": ["fake"]},
            {"name": "retry", "backends": ["over", "fake"]},
            {"name": "over", "backends": ["over"]},
            {"name": "dead", "backends": ["dead"]},
            {"name": "idle", "backends": ["idle"]},
        ],
        "limits": {"max_attempts": 2, "max_prompt_chars": 1000},
    }
    gateway = start_gateway(tmp_path_factory.mktemp("gateway"), config)
    yield gateway
    assert gateway.stop() == 0, gateway.logs()


def stream_failure(
    gateway: Gateway, prompt: str, model: str = "fake", n: int = 20
) -> tuple[int, RpcFailure]:
    request = pb.GenerateStreamRequest(
        model=model, prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=n)
    )
    result = read_stream(gateway.stub().GenerateStream(request))
    assert result.error is not None, "the stream should have failed"
    assert result.end is None
    return len(result.deltas), result.error


def test_invalid_fields(gateway: Gateway) -> None:
    stub = gateway.stub()
    request = pb.GenerateRequest(
        model="fake",
        prompt="",
        sampling=pb.SamplingParameters(temperature=0, top_p=1.5, top_k=0),
        stopping=pb.StoppingCriteria(max_new_tokens=0, stop_sequences=["", "a", "b", "c", "d"]),
        response=pb.ResponseOptions(top_n_tokens=6),
        cache=pb.CacheControl(namespace="bad space"),
    )
    err = expect_failure(lambda: stub.Generate(request, metadata=[("x-request-id", "bad-1")]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in err.violations] == [
        "prompt",
        "sampling.temperature",
        "sampling.top_k",
        "sampling.top_p",
        "stopping.max_new_tokens",
        "stopping.stop_sequences",
        "stopping.stop_sequences[0]",
        "response.top_n_tokens",
        "cache.namespace",
    ]
    assert err.metadata["request_id"] == "bad-1" and err.trailing["x-request-id"] == "bad-1"
    assert err.retry_delay is None


def test_bytes_that_are_not_a_request_are_invalid_argument_and_logged_sparingly(
    gateway: Gateway,
) -> None:
    def send(data: bytes) -> grpc.RpcError:
        call = gateway.channel().unary_stream(
            f"/{SERVICE}/GenerateStream",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.GenerateStreamResponse.FromString,
        )(data, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        return caught.value

    corrupt = b"\x12\xff\xff\xff\xff\x0f"  # field 2 (prompt) with a length past the end
    for _ in range(50):
        err = send(corrupt)
        assert isinstance(err, grpc.Call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.details() or "").startswith("malformed request")
    wait_for(lambda: "malformed request" in gateway.logs(), "the warning")
    warnings = [line for line in gateway.log_lines() if line.get("event") == "malformed request"]
    assert 1 <= len(warnings) <= 2  # one line per 10 s, not one per request
    assert all(line["level"] == "warning" for line in warnings)
    assert "Traceback" not in gateway.logs()


def test_invalid_fields_on_the_stream_too(gateway: Gateway) -> None:
    n, err = stream_failure(gateway, "x" * 1001)
    assert n == 0 and err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.violations == [("prompt", "must be at most 1000 characters (got 1001)")]


def test_limits_from_the_backends_info(gateway: Gateway) -> None:
    # The fake's /info: max_total_tokens 2048, max_stop_sequences 4.
    stopping = pb.StoppingCriteria(max_new_tokens=2048)
    err = expect_failure(
        lambda: gateway.stub().Generate(
            pb.GenerateRequest(model="fake", prompt="x", stopping=stopping)
        )
    )
    assert err.violations == [
        ("stopping.max_new_tokens", "must be at most 2047 for this model (got 2048)")
    ]


def test_unknown_model(gateway: Gateway) -> None:
    err = expect_failure(
        lambda: gateway.stub().Generate(pb.GenerateRequest(model="gpt-9", prompt="x"))
    )
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.reason == "ROUTE_NOT_FOUND"
    assert err.metadata["model"] == "gpt-9"
    assert "fake" in err.metadata["models"].split(",")


def test_bad_chat_role(gateway: Gateway) -> None:
    chat = pb.Messages(messages=[pb.Message(role="narrator", content="x")])
    err = expect_failure(
        lambda: gateway.stub().Generate(pb.GenerateRequest(model="fake", chat=chat))
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "CHAT_TEMPLATE_ERROR"
    assert err.violations[0][0] == "chat.messages" and "narrator" in err.violations[0][1]


def test_only_if_cached_without_a_cache(gateway: Gateway) -> None:
    cache = pb.CacheControl(mode=pb.CACHE_MODE_ONLY_IF_CACHED)
    err = expect_failure(
        lambda: gateway.stub().Generate(pb.GenerateRequest(model="fake", prompt="x", cache=cache))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_CACHED")


def test_backend_overloaded(gateway: Gateway, overloaded: Fake) -> None:
    before = overloaded.stats()["requests"]
    n, err = stream_failure(gateway, "hello", model="over")
    assert n == 0
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "BACKEND_OVERLOADED"
    assert err.retry_delay is not None and err.retry_delay > 0
    assert err.metadata["backend"] == "over" and err.metadata["backend_error"] == "overloaded"
    # One replica in the route: nothing else to try.
    assert overloaded.stats()["requests"] == before + 1


def test_retry_on_another_backend_before_the_first_token(
    gateway: Gateway, overloaded: Fake
) -> None:
    before = overloaded.stats()["requests"]
    stub = gateway.stub()
    # Replicas are picked in turn: within two requests one starts on the overloaded one.
    for _ in range(2):
        response = stub.Generate(pb.GenerateRequest(model="retry", prompt="hello"))
        assert response.start.backend == "fake"
    assert overloaded.stats()["requests"] >= before + 1
    assert gateway.metrics()['streamgate_retries_total{route="retry"}'] >= 1


def test_stream_start_names_the_backend_that_served_after_a_retry(
    gateway: Gateway, overloaded: Fake
) -> None:
    retries = gateway.metrics().get('streamgate_retries_total{route="retry"}', 0)
    stub = gateway.stub()
    # With another replica to fail over to, headers and Start wait for the first token.
    for _ in range(2):
        call = stub.GenerateStream(pb.GenerateStreamRequest(model="retry", prompt="hello"))
        result = read_stream(call)
        assert result.error is None and result.start is not None
        assert result.start.backend == "fake"
        assert dict(call.initial_metadata())["x-backend"] == "fake"
    assert gateway.metrics()['streamgate_retries_total{route="retry"}'] > retries


def test_backend_validation(gateway: Gateway) -> None:
    n, err = stream_failure(gateway, "mode:validation")
    assert n == 0
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_VALIDATION")
    assert "Input validation" in err.message


@pytest.mark.parametrize(
    ("prompt", "code", "reason", "sent"),
    [
        ("mode:error_mid_stream after=3", grpc.StatusCode.INTERNAL, "BACKEND_GENERATION_FAILED", 3),
        ("mode:drop after=3", grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", 3),
        ("mode:eof after=2", grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", 2),
        ("mode:malformed after=3", grpc.StatusCode.UNAVAILABLE, "BACKEND_PROTOCOL_ERROR", 3),
    ],
)
def test_backend_failure_after_tokens(
    gateway: Gateway, prompt: str, code: grpc.StatusCode, reason: str, sent: int
) -> None:
    n, err = stream_failure(gateway, prompt)
    assert n == sent  # every token received before the failure was delivered
    assert (err.code, err.reason) == (code, reason)
    assert err.metadata["tokens_sent"] == str(sent)
    assert err.metadata["backend"] == "fake" and err.metadata["route"] == "fake"
    assert f"after {sent} tokens" in err.message


def test_unary_failure_after_tokens(gateway: Gateway) -> None:
    request = pb.GenerateRequest(model="fake", prompt="mode:error_mid_stream after=3")
    err = expect_failure(lambda: gateway.stub().Generate(request))
    assert (err.code, err.reason) == (grpc.StatusCode.INTERNAL, "BACKEND_GENERATION_FAILED")
    assert err.metadata["tokens_sent"] == "0"  # nothing reached the client


def test_backend_http_error(gateway: Gateway) -> None:
    n, err = stream_failure(gateway, "mode:http_error status=503")
    assert n == 0
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
    assert err.retry_delay is not None


def test_no_healthy_backend(gateway: Gateway) -> None:
    err = expect_failure(
        lambda: gateway.stub().Generate(pb.GenerateRequest(model="dead", prompt="x"))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "NO_HEALTHY_BACKEND")
    assert err.retry_delay is not None


def test_backend_idle_timeout(gateway: Gateway, fake: Fake) -> None:
    disconnects = fake.stats()["disconnects"]
    n, err = stream_failure(gateway, "mode:hang", model="idle")
    assert n == 0
    assert (err.code, err.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "BACKEND_TIMEOUT")
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the upstream to be closed")


def test_health_follows_the_backends(gateways: Callable[..., Gateway], tmp_path: Path) -> None:
    port = free_port()
    gateway = gateways(
        {"backends": [engine_backend(f"http://127.0.0.1:{port}", "later")]}, name="later"
    )
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert gateway.health("") == not_serving and gateway.health(SERVICE) == not_serving
    fake = start_fake(tmp_path / "later.log", "--port", str(port))
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_for(lambda: gateway.health(SERVICE) == serving, "the backend to be seen healthy")
        response = gateway.stub().Generate(pb.GenerateRequest(prompt="x"))
        assert response.start.backend == "later"
    finally:
        fake.stop()
    wait_for(lambda: gateway.health("") == not_serving, "the backend to be seen down")


def test_message_size_limit(gateways: Callable[..., Gateway], fake: Fake) -> None:
    gateway = gateways(
        {
            "listen": {"host": "127.0.0.1", "port": 0, "max_message_bytes": 65536},
            "backends": [engine_backend(fake.url, "fake")],
        },
        name="small",
    )
    assert gateway.stub().Generate(pb.GenerateRequest(prompt="x" * 60000)).text
    options = (("grpc.max_send_message_length", 1 << 24),)
    big = pb.GenerateRequest(prompt="x" * 70000)
    err = expect_failure(lambda: gateway.stub(options).Generate(big))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # refused by gRPC itself
