"""The product out of the box: a gateway with its embedded default, SmolLM2-135M-Instruct in its
native Q4_1 GGUF weights, answering real questions through gRPC with the model's own chat
template. A handful of short greedy generations; the rest of the suite runs on `tiny`."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import grpc
import pytest

from streamgate_client.v1 import generation_pb2 as pb
from support.gateways import Gateway
from support.processes import wait_for
from support.rpc import read_stream

FRANCE = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def gateway(gateways: Callable[..., Gateway]) -> Gateway:
    """The gateway as `make run` starts it: no backends, the embedded default model."""
    return gateways({})


def chat(*turns: tuple[str, str], max_new_tokens: int = 32, **fields: object) -> pb.GenerateRequest:
    """A greedy chat request."""
    messages = [pb.Message(role=role, content=content) for role, content in turns]
    fields.setdefault("stopping", pb.StoppingCriteria(max_new_tokens=max_new_tokens))
    return pb.GenerateRequest(chat=pb.Messages(messages=messages), **fields)  # type: ignore[arg-type]


def engine_metric(gateway: Gateway, name: str) -> float:
    """One sample of the embedded engine's /metrics."""
    with urllib.request.urlopen(gateway.embedded_engine()[1] + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    pytest.fail(f"{name} is not in the engine's /metrics")


def test_the_default_route_serves_the_packaged_model(gateway: Gateway) -> None:
    [model] = gateway.stub().ListModels(pb.ListModelsRequest()).models
    assert model.name == "smollm2-135m-instruct" and model.default
    assert any("smollm2" in m.lower() for m in model.backend_models), model.backend_models
    with urllib.request.urlopen(gateway.embedded_engine()[1] + "/info", timeout=10) as resp:
        info = json.loads(resp.read())
    assert "<|im_start|>" in info["chat_template"]  # the GGUF's own template


def test_it_knows_the_capital_of_france(gateway: Gateway) -> None:
    answer = gateway.stub().Generate(chat(("user", FRANCE)))
    assert "Paris" in answer.text, answer.text
    assert answer.end.finish_reason == pb.FINISH_REASON_EOS_TOKEN  # it stops by itself
    assert answer.end.usage.prompt_tokens > 10  # the chat template's tokens are counted


def test_the_answer_streams_step_by_step(gateway: Gateway) -> None:
    call = gateway.stub().GenerateStream(
        pb.GenerateStreamRequest(
            chat=pb.Messages(messages=[pb.Message(role="user", content=FRANCE)]),
            stopping=pb.StoppingCriteria(max_new_tokens=32),
        )
    )
    result = read_stream(call)
    assert result.error is None and result.end is not None
    assert "Paris" in result.text
    assert len(result.deltas) == result.end.usage.completion_tokens  # one Delta per step


def test_a_conversation_keeps_its_context(gateway: Gateway) -> None:
    first = gateway.stub().Generate(chat(("user", "My name is Ada. Please remember it.")))
    again = gateway.stub().Generate(
        chat(
            ("user", "My name is Ada. Please remember it."),
            ("assistant", first.text),
            ("user", "What is my name?"),
        )
    )
    assert "Ada" in again.text, (first.text, again.text)


def test_stop_sequences_and_max_new_tokens(gateway: Gateway) -> None:
    count = ("user", "Count from 1 to 20, separated by commas.")
    stopped = gateway.stub().Generate(
        chat(count, stopping=pb.StoppingCriteria(max_new_tokens=64, stop_sequences=["5"]))
    )
    assert stopped.end.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE, stopped.text
    assert stopped.text.endswith("5") and "6" not in stopped.text
    capped = gateway.stub().Generate(chat(count, max_new_tokens=3))
    assert capped.end.finish_reason == pb.FINISH_REASON_LENGTH
    assert capped.end.usage.completion_tokens == 3


def test_cancelling_mid_answer_frees_the_sequence(gateway: Gateway) -> None:
    request = pb.GenerateStreamRequest(
        chat=pb.Messages(
            messages=[pb.Message(role="user", content="Count from 1 to 300, separated by commas.")]
        ),
        stopping=pb.StoppingCriteria(max_new_tokens=400),
    )
    call = gateway.stub().GenerateStream(request)
    messages = iter(call)
    assert next(messages).WhichOneof("event") == "start"
    for _ in range(3):
        assert next(messages).WhichOneof("event") == "delta"
    assert engine_metric(gateway, "tgi_batch_current_size") == 1
    call.cancel()
    with pytest.raises(grpc.RpcError):
        next(messages)
    wait_for(lambda: engine_metric(gateway, "tgi_batch_current_size") == 0, "the batch to empty")
    wait_for(
        lambda: engine_metric(gateway, 'streamgate_engine_kv_blocks{state="used"}') == 0,
        "its KV blocks to be freed",
    )
