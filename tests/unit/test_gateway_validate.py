"""Request validation and pre-processing: every invalid field gives its own FieldViolation."""

from __future__ import annotations

import math

import grpc
import pytest

from streamgate.gateway.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from streamgate.gateway.errors import GatewayError, Reason, Violation
from streamgate.gateway.prepare import prepare, tgi_parameters
from streamgate.gateway.validate import RequestLimits, validate_request
from streamgate_client.v1 import generation_pb2 as pb

LIMITS = RequestLimits(
    max_prompt_chars=100,
    max_new_tokens=511,
    max_input_tokens=256,
    max_stop_sequences=4,
    max_top_n_tokens=5,
    max_cache_ttl_seconds=3600,
)
CHATML = ChatTemplate(DEFAULT_CHAT_TEMPLATE)


def fields(request: pb.GenerateStreamRequest | pb.GenerateRequest) -> list[str]:
    return [v.field for v in validate_request(request, LIMITS)]


def test_a_valid_request_has_no_violations() -> None:
    request = pb.GenerateStreamRequest(
        prompt="hello",
        sampling=pb.SamplingParameters(
            do_sample=True, temperature=0.7, top_k=50, top_p=1.0, typical_p=0.5,
            repetition_penalty=1.1, frequency_penalty=-2.0, seed=0,
        ),
        stopping=pb.StoppingCriteria(
            max_new_tokens=511, stop_sequences=["a", "b", "c", "d"], truncate_input_tokens=256
        ),
        response=pb.ResponseOptions(tokens=True, top_n_tokens=5),
        cache=pb.CacheControl(mode=pb.CACHE_MODE_BYPASS, ttl_seconds=3600, namespace="team-a.v1"),
    )  # fmt: skip
    assert validate_request(request, LIMITS) == []
    assert validate_request(pb.GenerateRequest(prompt="x"), LIMITS) == []


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (pb.GenerateStreamRequest(), "prompt", "one of prompt or chat is required"),
        (pb.GenerateStreamRequest(prompt=""), "prompt", "must not be empty"),
        (pb.GenerateStreamRequest(prompt="x" * 101), "prompt", "at most 100 characters (got 101)"),
        (pb.GenerateStreamRequest(chat=pb.Messages()), "chat.messages", "must not be empty"),
        (
            pb.GenerateStreamRequest(
                chat=pb.Messages(messages=[pb.Message(role="user"), pb.Message(content="x")])
            ),
            "chat.messages[1].role",
            "must not be empty",
        ),
    ],
)
def test_input(request_: pb.GenerateStreamRequest, field: str, words: str) -> None:
    [violation] = validate_request(request_, LIMITS)
    assert violation.field == field
    assert words in violation.description


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (pb.SamplingParameters(temperature=0.0), "sampling.temperature"),
        (pb.SamplingParameters(temperature=-1.0), "sampling.temperature"),
        (pb.SamplingParameters(temperature=math.nan), "sampling.temperature"),
        (pb.SamplingParameters(temperature=math.inf), "sampling.temperature"),
        (pb.SamplingParameters(top_k=0), "sampling.top_k"),
        (pb.SamplingParameters(top_p=0.0), "sampling.top_p"),
        (pb.SamplingParameters(top_p=1.5), "sampling.top_p"),
        (pb.SamplingParameters(top_p=math.nan), "sampling.top_p"),
        (pb.SamplingParameters(typical_p=0.0), "sampling.typical_p"),
        (pb.SamplingParameters(typical_p=1.01), "sampling.typical_p"),
        (pb.SamplingParameters(repetition_penalty=0.0), "sampling.repetition_penalty"),
        (pb.SamplingParameters(repetition_penalty=-0.5), "sampling.repetition_penalty"),
        (pb.SamplingParameters(frequency_penalty=2.5), "sampling.frequency_penalty"),
        (pb.SamplingParameters(frequency_penalty=-3.0), "sampling.frequency_penalty"),
    ],
)
def test_sampling(sampling: pb.SamplingParameters, field: str) -> None:
    assert fields(pb.GenerateStreamRequest(prompt="x", sampling=sampling)) == [field]


def test_unset_sampling_fields_are_not_checked() -> None:
    # Unset optional fields read as 0 but are absent: the backend's defaults apply.
    assert fields(pb.GenerateStreamRequest(prompt="x", sampling=pb.SamplingParameters())) == []


@pytest.mark.parametrize(
    ("stopping", "field", "words"),
    [
        (pb.StoppingCriteria(max_new_tokens=0), "stopping.max_new_tokens", "at least 1"),
        (pb.StoppingCriteria(max_new_tokens=512), "stopping.max_new_tokens", "at most 511"),
        (
            pb.StoppingCriteria(stop_sequences=["a", "b", "c", "d", "e"]),
            "stopping.stop_sequences",
            "at most 4 stop sequences (got 5)",
        ),
        (pb.StoppingCriteria(stop_sequences=["a", ""]), "stopping.stop_sequences[1]", "empty"),
        (
            pb.StoppingCriteria(truncate_input_tokens=257),
            "stopping.truncate_input_tokens",
            "at most 256",
        ),
    ],
)
def test_stopping(stopping: pb.StoppingCriteria, field: str, words: str) -> None:
    [violation] = validate_request(pb.GenerateStreamRequest(prompt="x", stopping=stopping), LIMITS)
    assert violation.field == field
    assert words in violation.description


def test_unknown_backend_limits_are_not_guessed() -> None:
    limits = RequestLimits(
        max_prompt_chars=100, max_new_tokens=None, max_input_tokens=None,
        max_stop_sequences=4, max_top_n_tokens=5, max_cache_ttl_seconds=1,
    )  # fmt: skip
    stopping = pb.StoppingCriteria(max_new_tokens=100_000, truncate_input_tokens=100_000)
    assert validate_request(pb.GenerateRequest(prompt="x", stopping=stopping), limits) == []


def test_response_options() -> None:
    request = pb.GenerateStreamRequest(prompt="x", response=pb.ResponseOptions(top_n_tokens=6))
    [violation] = validate_request(request, LIMITS)
    assert violation == Violation("response.top_n_tokens", "must be at most 5 (got 6)")


@pytest.mark.parametrize(
    ("cache", "field"),
    [
        (pb.CacheControl(mode=7), "cache.mode"),  # type: ignore[arg-type]
        (pb.CacheControl(ttl_seconds=3601), "cache.ttl_seconds"),
        (pb.CacheControl(namespace="has space"), "cache.namespace"),
        (pb.CacheControl(namespace="-leading"), "cache.namespace"),
        (pb.CacheControl(namespace="x" * 65), "cache.namespace"),
    ],
)
def test_cache_control(cache: pb.CacheControl, field: str) -> None:
    assert fields(pb.GenerateStreamRequest(prompt="x", cache=cache)) == [field]


def test_every_bad_field_at_once() -> None:
    request = pb.GenerateRequest(
        prompt="",
        sampling=pb.SamplingParameters(temperature=0, top_p=2, top_k=0),
        stopping=pb.StoppingCriteria(max_new_tokens=0, stop_sequences=[""]),
        response=pb.ResponseOptions(top_n_tokens=9),
        cache=pb.CacheControl(namespace="?"),
    )
    assert fields(request) == [
        "prompt",
        "sampling.temperature",
        "sampling.top_k",
        "sampling.top_p",
        "stopping.max_new_tokens",
        "stopping.stop_sequences[0]",
        "response.top_n_tokens",
        "cache.namespace",
    ]


# ---- prepare: validation errors as GatewayError, templates, TGI parameters --------------------


def run_prepare(request: pb.GenerateRequest, default_max_new_tokens: int | None = None) -> object:
    return prepare(request, CHATML, LIMITS, default_max_new_tokens=default_max_new_tokens)


def test_prepare_raises_invalid_argument_with_all_violations() -> None:
    request = pb.GenerateRequest(prompt="", stopping=pb.StoppingCriteria(max_new_tokens=0))
    with pytest.raises(GatewayError) as caught:
        run_prepare(request)
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == Reason.INVALID_ARGUMENT
    assert [v.field for v in err.violations] == ["prompt", "stopping.max_new_tokens"]


def test_prepare_renders_chat() -> None:
    chat = pb.Messages(messages=[pb.Message(role="user", content="hi")])
    prepared = prepare(pb.GenerateRequest(chat=chat), CHATML, LIMITS, default_max_new_tokens=None)
    assert prepared.chat
    assert prepared.inputs == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    chat.add_generation_prompt = False
    prepared = prepare(pb.GenerateRequest(chat=chat), CHATML, LIMITS, default_max_new_tokens=None)
    assert prepared.inputs == "<|im_start|>user\nhi<|im_end|>\n"


def test_prepare_template_refusal_is_invalid_argument() -> None:
    chat = pb.Messages(messages=[pb.Message(role="wizard", content="hi")])
    with pytest.raises(GatewayError) as caught:
        run_prepare(pb.GenerateRequest(chat=chat))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == Reason.CHAT_TEMPLATE_ERROR
    assert [v.field for v in caught.value.violations] == ["chat.messages"]
    assert "wizard" in caught.value.message


def test_prepare_bounds_the_rendered_prompt() -> None:
    chat = pb.Messages(messages=[pb.Message(role="user", content="x" * 90)])
    with pytest.raises(GatewayError) as caught:
        run_prepare(pb.GenerateRequest(chat=chat))
    [violation] = caught.value.violations
    assert violation.field == "chat.messages" and "at most 100 characters" in violation.description


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
    assert tgi_parameters(request, 64).to_json() == {
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


def test_tokens_option() -> None:
    def tokens(response: pb.ResponseOptions) -> bool:
        request = pb.GenerateRequest(prompt="x", response=response)
        return prepare(request, CHATML, LIMITS, default_max_new_tokens=None).tokens

    assert not tokens(pb.ResponseOptions())
    assert tokens(pb.ResponseOptions(tokens=True))
    assert tokens(pb.ResponseOptions(top_n_tokens=1))  # implies tokens
