"""Pre-processing: validation errors as one GatewayError, the route's bounds, chat templates,
TGI's parameters."""

from __future__ import annotations

from typing import Any

import pytest

from streamgate.config import LimitsConfig
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s03_prepare import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplate,
    PreparedRequest,
    prepare,
    tgi_parameters,
)
from streamgate.routing import Route
from streamgate_client.v1 import generation_pb2 as pb
from support.routes import backend_info, replica, route

CHATML = ChatTemplate(DEFAULT_CHAT_TEMPLATE)
LIMITS = LimitsConfig(max_top_n_tokens=5, max_cache_ttl_seconds=3600)
MAX_PROMPT_CHARS = 100


def tiny(default_max_new_tokens: int | None = None) -> Route:
    """A route whose backend has a context of 512 tokens, 256 of them for the prompt."""
    info = backend_info(max_input_tokens=256, max_total_tokens=512, max_stop_sequences=4)
    return route("tiny", replica("b", info=info), default_max_new_tokens=default_max_new_tokens)


def run_prepare(request: pb.GenerateRequest, to: Route | None = None) -> PreparedRequest:
    return prepare(request, to or tiny(), CHATML, LIMITS, MAX_PROMPT_CHARS)


def test_prepare_raises_invalid_argument_with_all_violations() -> None:
    request = pb.GenerateRequest(prompt="", stopping=pb.StoppingCriteria(max_new_tokens=0))
    with pytest.raises(GatewayError) as caught:
        run_prepare(request)
    err = caught.value
    assert err.code == Code.INVALID_ARGUMENT
    assert err.reason == Reason.INVALID_ARGUMENT
    assert [v.field for v in err.violations] == ["prompt", "stopping.max_new_tokens"]


@pytest.mark.parametrize(
    ("stopping", "field"),
    [
        (pb.StoppingCriteria(max_new_tokens=512), "stopping.max_new_tokens"),
        (pb.StoppingCriteria(truncate_input_tokens=257), "stopping.truncate_input_tokens"),
        (pb.StoppingCriteria(stop_sequences=list("abcde")), "stopping.stop_sequences"),
    ],
)
def test_the_routes_backends_bound_the_request(stopping: pb.StoppingCriteria, field: str) -> None:
    request = pb.GenerateRequest(prompt="x", stopping=stopping)
    with pytest.raises(GatewayError) as caught:
        run_prepare(request)
    assert [v.field for v in caught.value.violations] == [field]
    # A backend that did not say its limits: the backend itself checks them.
    if field != "stopping.stop_sequences":  # the config's max_stop_sequences (4) applies then
        run_prepare(request, route("unknown", replica("b")))


def test_the_prompt_is_bounded_in_characters() -> None:
    with pytest.raises(GatewayError) as caught:
        run_prepare(pb.GenerateRequest(prompt="x" * (MAX_PROMPT_CHARS + 1)))
    [violation] = caught.value.violations
    assert violation.field == "prompt" and "at most 100 characters" in violation.description


def test_prepare_renders_chat() -> None:
    chat = pb.Messages(messages=[pb.Message(role="user", content="hi")])
    prepared = run_prepare(pb.GenerateRequest(chat=chat))
    assert prepared.chat
    assert prepared.inputs == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    chat.add_generation_prompt = False
    prepared = run_prepare(pb.GenerateRequest(chat=chat))
    assert prepared.inputs == "<|im_start|>user\nhi<|im_end|>\n"


def test_prepare_template_refusal_is_invalid_argument() -> None:
    chat = pb.Messages(messages=[pb.Message(role="wizard", content="hi")])
    with pytest.raises(GatewayError) as caught:
        run_prepare(pb.GenerateRequest(chat=chat))
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.reason == Reason.CHAT_TEMPLATE_ERROR
    assert [v.field for v in caught.value.violations] == ["chat.messages"]
    assert "wizard" in caught.value.message


def test_prepare_bounds_the_rendered_prompt() -> None:
    chat = pb.Messages(messages=[pb.Message(role="user", content="x" * 90)])
    with pytest.raises(GatewayError) as caught:
        run_prepare(pb.GenerateRequest(chat=chat))
    [violation] = caught.value.violations
    assert violation.field == "chat.messages" and "at most 100 characters" in violation.description


def test_a_template_that_renders_nothing_is_invalid() -> None:
    chat = pb.Messages(messages=[pb.Message(role="user", content="hi")])
    with pytest.raises(GatewayError) as caught:
        prepare(pb.GenerateRequest(chat=chat), tiny(), ChatTemplate(""), LIMITS, MAX_PROMPT_CHARS)
    assert [v.field for v in caught.value.violations] == ["chat.messages"]


def test_the_routes_default_max_new_tokens_applies_when_the_request_sets_none() -> None:
    assert run_prepare(pb.GenerateRequest(prompt="x")).parameters.max_new_tokens is None
    prepared = run_prepare(pb.GenerateRequest(prompt="x"), tiny(default_max_new_tokens=64))
    assert prepared.parameters.max_new_tokens == 64
    request = pb.GenerateRequest(prompt="x", stopping=pb.StoppingCriteria(max_new_tokens=3))
    assert run_prepare(request, tiny(default_max_new_tokens=64)).parameters.max_new_tokens == 3


def test_the_seed_the_request_gave_is_kept() -> None:
    assert run_prepare(pb.GenerateRequest(prompt="x")).seed is None
    seeded = pb.GenerateRequest(prompt="x", sampling=pb.SamplingParameters(seed=0))
    assert run_prepare(seeded).seed == 0


def test_tgi_parameters_send_only_what_is_set() -> None:
    assert tgi_parameters(pb.GenerateRequest(prompt="x"), None).to_json() == {}
    assert tgi_parameters(pb.GenerateRequest(prompt="x"), 64).to_json() == {"max_new_tokens": 64}
    request = pb.GenerateRequest(
        prompt="x",
        sampling=pb.SamplingParameters(
            do_sample=False, temperature=0.7, top_k=5, top_p=0.9, typical_p=1.0,
            repetition_penalty=1.2, frequency_penalty=0.0, seed=0,
        ),
        stopping=pb.StoppingCriteria(
            max_new_tokens=3, stop_sequences=["\n"], truncate_input_tokens=10
        ),
        response=pb.ResponseOptions(top_n_tokens=2),
    )  # fmt: skip
    expected: dict[str, Any] = {
        "do_sample": False,
        "temperature": 0.7,  # as written, not float32's 0.699999988
        "top_k": 5,
        "top_p": 0.9,
        # typical_p 1.0 is "off": TGI refuses it explicitly, so it is not sent
        "repetition_penalty": 1.2,
        "frequency_penalty": 0.0,
        "seed": 0,
        "max_new_tokens": 3,
        "stop": ["\n"],
        "truncate": 10,
        "top_n_tokens": 2,
    }
    assert tgi_parameters(request, 64).to_json() == expected


def test_tokens_option() -> None:
    def tokens(response: pb.ResponseOptions) -> bool:
        return run_prepare(pb.GenerateRequest(prompt="x", response=response)).tokens

    assert not tokens(pb.ResponseOptions())
    assert tokens(pb.ResponseOptions(tokens=True))
    assert tokens(pb.ResponseOptions(top_n_tokens=1))  # implies tokens
