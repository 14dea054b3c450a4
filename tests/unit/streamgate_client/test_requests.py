"""streamgate_client.requests: keyword options become exactly the request fields given."""

from __future__ import annotations

import pytest

from streamgate_client import build_request
from streamgate_client.v1 import generation_pb2 as pb


def test_unset_options_stay_unset() -> None:
    request = build_request("hi")
    assert request.prompt == "hi"
    assert request.model == ""
    for name in ("sampling", "stopping", "response", "cache"):
        assert not request.HasField(name), name


def test_zero_is_sent_as_a_value() -> None:
    request = build_request(
        "hi",
        temperature=0.0,
        top_k=0,
        top_p=0.0,
        typical_p=0.0,
        repetition_penalty=0.0,
        frequency_penalty=0.0,
        seed=0,
        do_sample=False,
        max_new_tokens=0,
        truncate_input_tokens=0,
    )
    decoded = pb.GenerateStreamRequest.FromString(request.SerializeToString())
    for name in (
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "frequency_penalty",
        "seed",
        "do_sample",
    ):
        assert decoded.sampling.HasField(name), name
    assert decoded.stopping.HasField("max_new_tokens")
    assert decoded.stopping.HasField("truncate_input_tokens")


def test_only_given_fields_are_set() -> None:
    request = build_request(
        "hi",
        model="big",
        temperature=0.7,
        stop=["\n\n", "END"],
        top_n_tokens=2,
        cache_mode="bypass",
    )
    assert request.model == "big"
    assert request.sampling.temperature == pytest.approx(0.7)
    assert [f.name for f, _ in request.sampling.ListFields()] == ["temperature"]
    assert list(request.stopping.stop_sequences) == ["\n\n", "END"]
    assert not request.stopping.HasField("max_new_tokens")
    assert request.response.top_n_tokens == 2
    assert request.cache.mode == pb.CACHE_MODE_BYPASS


def test_a_single_stop_string_is_one_sequence() -> None:
    assert list(build_request("hi", stop="END").stopping.stop_sequences) == ["END"]


def test_messages_become_a_chat() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    request = build_request(messages=messages, add_generation_prompt=False)
    assert request.WhichOneof("input") == "chat"
    assert [(m.role, m.content) for m in request.chat.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ]
    assert request.chat.HasField("add_generation_prompt")
    assert not build_request(messages=messages).chat.HasField("add_generation_prompt")
    assert build_request(messages=[]).WhichOneof("input") == "chat"


def test_bad_arguments_fail_before_sending() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        build_request("hi", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="exactly one"):
        build_request()
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        build_request(messages=[{"content": "no role"}])
    with pytest.raises(TypeError, match="max_tokens"):
        build_request("hi", max_tokens=5)  # type: ignore[call-arg]
