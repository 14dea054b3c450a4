"""The gateway in front of a real engine: streaming per step, unary, models, health, metadata,
cancellation and deadlines (the backend's side of them included)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from streamgate_client.v1 import generation_pb2 as pb
from support.engines import Engine
from support.fake import Fake
from support.gateways import SERVICE, Gateway, engine_backend, start_gateway
from support.processes import wait_for
from support.rpc import expect_failure, read_stream

STEPS = 12


@pytest.fixture(scope="module")
def gateway(
    engine: Engine, fake: Fake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = {
        "backends": [
            engine_backend(engine.url, count_prompt_tokens=True),
            engine_backend(fake.url, "fake"),
        ],
        "routes": [
            {"name": "tiny", "backends": ["engine"], "max_new_tokens": 16},
            {"name": "fake", "backends": ["fake"]},
        ],
        "default_route": "tiny",
    }
    gateway = start_gateway(tmp_path_factory.mktemp("gateway"), config)
    yield gateway
    assert gateway.stop() == 0, gateway.logs()


def greedy(prompt: str, n: int, **response: object) -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest(
        prompt=prompt,
        stopping=pb.StoppingCriteria(max_new_tokens=n),
        response=pb.ResponseOptions(**response),  # type: ignore[arg-type]
    )


def test_stream_one_delta_per_step(gateway: Gateway, engine: Engine) -> None:
    prompt = engine.long_running_prompt(STEPS)
    stub = gateway.stub()
    read_stream(stub.GenerateStream(greedy(prompt, 2)))  # warm up the path once
    call = stub.GenerateStream(
        greedy(prompt, STEPS, tokens=True), metadata=[("x-request-id", "req-1")]
    )
    result = read_stream(call)
    assert result.error is None
    start, end = result.start, result.end
    assert start is not None and end is not None
    assert start.request_id == "req-1"
    assert (start.model, start.route, start.pool, start.backend) == (
        engine.info()["model_id"],
        "tiny",
        "tiny",  # the route's own pool
        "engine",
    )
    assert start.cache_status == pb.CACHE_STATUS_BYPASS  # the cache is off in these tests
    assert start.input_tokens == len(engine.tokenize(prompt))
    assert not start.HasField("seed")
    # One Delta per engine step, each with its one token.
    assert len(result.deltas) == STEPS
    assert all(len(d.tokens) == 1 for d in result.deltas)
    assert [d.text for d in result.deltas] == [
        "" if d.tokens[0].special else d.tokens[0].text for d in result.deltas
    ]
    assert end.finish_reason == pb.FINISH_REASON_LENGTH
    assert end.usage.prompt_tokens == start.input_tokens
    assert end.usage.completion_tokens == STEPS
    t = end.timings
    assert 0 < t.time_to_first_token_seconds <= t.total_seconds
    assert 0 <= t.gateway_overhead_seconds <= t.total_seconds
    assert result.initial_metadata == {
        "x-request-id": "req-1",
        "x-route": "tiny",
        "x-pool": "tiny",
        "x-backend": "engine",
        "x-cache-status": "BYPASS",
    }
    # The same greedy request straight to the engine gives the same text.
    _, _, body = engine.post(
        "/generate", {"inputs": prompt, "parameters": {"max_new_tokens": STEPS}}
    )
    assert result.text == body["generated_text"]


def test_a_burst_of_steps_still_goes_one_delta_per_step(gateway: Gateway) -> None:
    # The backend writes all 32 events at once (as after a slow step); the client reads
    # promptly, so nothing is merged.
    before = gateway.metrics().get("streamgate_merged_events_total", 0.0)
    request = pb.GenerateStreamRequest(model="fake", prompt="mode:normal tokens=32 batch=32")
    result = read_stream(gateway.stub().GenerateStream(request))
    assert result.error is None and result.end is not None
    assert [d.text for d in result.deltas] == [f"t{i} " for i in range(32)]
    assert gateway.metrics().get("streamgate_merged_events_total", 0.0) == before


def test_stream_top_tokens_and_seed(gateway: Gateway, engine: Engine) -> None:
    request = greedy(engine.long_running_prompt(4), 4, top_n_tokens=3)
    request.sampling.do_sample = True
    request.sampling.seed = 42
    result = read_stream(gateway.stub().GenerateStream(request))
    assert result.error is None and result.start is not None
    assert result.start.seed == 42
    tokens = [t for d in result.deltas for t in d.tokens]
    assert len(tokens) == 4
    assert all(len(t.top_tokens) == 3 and t.logprob <= 0 for t in tokens)
    # A seeded request is reproducible through the gateway.
    again = read_stream(gateway.stub().GenerateStream(request))
    assert again.text == result.text


def test_unary_generate(gateway: Gateway, engine: Engine) -> None:
    prompt = engine.long_running_prompt(STEPS)
    stub = gateway.stub()
    request = pb.GenerateRequest(
        prompt=prompt,
        stopping=pb.StoppingCriteria(max_new_tokens=STEPS),
        response=pb.ResponseOptions(tokens=True),
    )
    response, call = stub.Generate.with_call(request)
    streamed = read_stream(stub.GenerateStream(greedy(prompt, STEPS)))
    assert response.text == streamed.text
    assert len(response.tokens) == STEPS
    assert response.start.backend == "engine" and response.start.route == "tiny"
    assert response.start.input_tokens == response.end.usage.prompt_tokens > 0
    assert response.end.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.end.usage.completion_tokens == STEPS
    metadata = dict(call.initial_metadata())
    assert metadata["x-backend"] == "engine" and metadata["x-cache-status"] == "BYPASS"


def test_route_default_max_new_tokens(gateway: Gateway, engine: Engine) -> None:
    # The route sets max_new_tokens 16 for requests that give none.
    response = gateway.stub().Generate(pb.GenerateRequest(prompt=engine.long_running_prompt(16)))
    assert response.end.usage.completion_tokens == 16


def test_chat_through_the_default_template(gateway: Gateway) -> None:
    chat = pb.Messages(
        messages=[
            pb.Message(role="system", content="Be brief."),
            pb.Message(role="user", content="Hi"),
        ]
    )
    request = pb.GenerateStreamRequest(chat=chat, stopping=pb.StoppingCriteria(max_new_tokens=3))
    result = read_stream(gateway.stub().GenerateStream(request))
    assert result.error is None and result.end is not None
    assert result.start is not None and result.start.input_tokens > 10  # the rendered ChatML


def test_model_chosen_by_name_or_x_route(gateway: Gateway) -> None:
    stub = gateway.stub()
    by_name = stub.Generate(pb.GenerateRequest(model="fake", prompt="hello"))
    assert by_name.start.backend == "fake" and by_name.start.model == "fake/tgi"
    by_header = stub.GenerateStream(
        pb.GenerateStreamRequest(prompt="hello"), metadata=[("x-route", "fake")]
    )
    result = read_stream(by_header)
    assert result.start is not None and result.end is not None
    assert result.start.route == "fake"
    # count_prompt_tokens is off for this backend: Start has no count, End has the backend's.
    assert result.start.input_tokens == 0 and result.end.usage.prompt_tokens == 1
    assert result.text == "".join(f"t{i} " for i in range(20))


def test_prompt_over_the_backend_token_limit(gateway: Gateway) -> None:
    # 300 characters are 300+ tokens for the byte-level tiny model: over max_input_tokens 256.
    request = pb.GenerateRequest(prompt="x" * 300, stopping=pb.StoppingCriteria(max_new_tokens=4))
    err = expect_failure(lambda: gateway.stub().Generate(request))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_VALIDATION")
    assert "prompt" in [field for field, _ in err.violations]


def test_reflection_lists_the_services(gateway: Gateway) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(gateway.channel())
    services = set(database.get_services())
    assert {SERVICE, "grpc.health.v1.Health"} <= services
    method = database.FindFileContainingSymbol(f"{SERVICE}.GenerateStream")
    assert method.name == "streamgate/v1/generation.proto"


def test_list_models(gateway: Gateway, engine: Engine) -> None:
    models = {m.name: m for m in gateway.stub().ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {"tiny", "fake"}
    tiny, fake = models["tiny"], models["fake"]
    assert tiny.default and not fake.default
    info = engine.info()
    assert list(tiny.backend_models) == [info["model_id"]]
    assert (tiny.max_input_tokens, tiny.max_total_tokens) == (256, 512)
    assert list(fake.backend_models) == ["fake/tgi"]
    assert (fake.max_input_tokens, fake.max_total_tokens) == (1024, 2048)


def test_health_serving(gateway: Gateway) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert gateway.health("") == serving
    assert gateway.health(SERVICE) == serving


def test_cancel_drops_the_sequence_in_the_engine(gateway: Gateway, engine: Engine) -> None:
    dropped_key = 'tgi_request_failure{err="dropped"}'
    wait_for(engine.idle, "the engine to be idle")
    dropped = engine.metrics()[dropped_key]
    prompt = engine.long_running_prompt(400)
    call = gateway.stub().GenerateStream(greedy(prompt, 400))
    messages = iter(call)
    assert next(messages).WhichOneof("event") == "start"
    for _ in range(3):
        assert next(messages).WhichOneof("event") == "delta"
    assert engine.metrics()["streamgate_engine_running_sequences"] == 1
    call.cancel()
    wait_for(lambda: engine.metrics()[dropped_key] == dropped + 1, "the engine to drop it")
    wait_for(lambda: engine.metrics()["streamgate_engine_running_sequences"] == 0, "batch empty")
    wait_for(engine.idle, "its KV blocks to be freed")
    wait_for(
        lambda: gateway.metrics().get(
            'streamgate_requests_total{code="CANCELLED",method="GenerateStream"}'
        ),
        "the gateway to count the cancelled call",
    )
    assert gateway.metrics()["streamgate_active_streams"] == 0


def test_deadline_while_waiting_for_the_first_token(gateway: Gateway, fake: Fake) -> None:
    disconnects = fake.stats()["disconnects"]
    request = pb.GenerateStreamRequest(model="fake", prompt="mode:hang")
    call = gateway.stub().GenerateStream(request, timeout=0.5)
    result = read_stream(call)
    assert result.error is not None
    assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # One replica: the backend was certain once the request was sent, so Start went out while
    # it was waiting; no token did.
    assert result.start is not None and result.start.backend == "fake" and not result.deltas
    # The gateway closed its upstream request: the fake saw the client leave.
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the upstream to be closed")


def test_deadline_in_the_middle_of_a_stream(gateway: Gateway, fake: Fake) -> None:
    disconnects = fake.stats()["disconnects"]
    request = pb.GenerateStreamRequest(
        model="fake",
        prompt="mode:normal delay=0.05",
        stopping=pb.StoppingCriteria(max_new_tokens=2000),
    )
    result = read_stream(gateway.stub().GenerateStream(request, timeout=1.0))
    assert result.error is not None
    assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert result.start is not None and result.deltas and result.end is None
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the upstream to be closed")


def test_unary_deadline(gateway: Gateway, fake: Fake) -> None:
    stub = gateway.stub()
    disconnects = fake.stats()["disconnects"]
    err = expect_failure(
        lambda: stub.Generate(pb.GenerateRequest(model="fake", prompt="mode:hang"), timeout=0.5)
    )
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the upstream to be closed")


def test_request_log_line(gateway: Gateway) -> None:
    gateway.stub().Generate(
        pb.GenerateRequest(prompt="secret words"),
        metadata=[("x-request-id", "log-1"), ("x-team", "a")],
    )

    def line() -> dict[str, object] | None:
        return next((x for x in gateway.log_lines() if x.get("request_id") == "log-1"), None)

    wait_for(line, "the request's log line")
    entry = line()
    assert entry is not None
    assert entry["event"] == "request" and entry["code"] == "OK"
    assert entry["route"] == "tiny" and entry["backend"] == "engine"
    assert entry["output_tokens"] == 16 and entry["input_tokens"]
    assert entry["labels"] == {"x-team": "a"}
    assert "total_s" in entry and "overhead_s" in entry
    assert "secret words" not in gateway.logs()  # prompts are not logged by default


def test_metrics(gateway: Gateway) -> None:
    gateway.stub().Generate(pb.GenerateRequest(prompt="hello"))
    m = gateway.metrics()
    assert m['streamgate_requests_total{code="OK",method="Generate"}'] >= 1
    assert m['streamgate_tokens_total{direction="out",route="tiny"}'] >= 16
    assert m['streamgate_backend_healthy{backend="engine"}'] == 1
    assert m['streamgate_time_to_first_token_seconds_count{route="tiny"}'] >= 1
    assert m['streamgate_inter_token_seconds_count{route="tiny"}'] >= 1
    assert m['streamgate_gateway_overhead_seconds_count{method="Generate"}'] >= 1
    assert 'streamgate_request_duration_seconds_count{method="Generate",route="tiny"}' in m
    assert "process_resident_memory_bytes" in m
