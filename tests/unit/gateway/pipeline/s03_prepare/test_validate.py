"""Request validation: every invalid field gives its own violation, all of them at once."""

from __future__ import annotations

import math

import pytest

from streamgate.gateway.pipeline.errors import Violation
from streamgate.gateway.pipeline.s03_prepare import RequestLimits, validate_request
from streamgate_client.v1 import generation_pb2 as pb

LIMITS = RequestLimits(
    max_prompt_chars=100,
    max_new_tokens=511,
    max_input_tokens=256,
    max_stop_sequences=4,
    max_top_n_tokens=5,
    max_cache_ttl_seconds=3600,
)


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
