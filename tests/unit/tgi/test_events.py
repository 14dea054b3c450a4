"""TGI's stream events: decoding them (client side) and building their JSON (server side)."""

from __future__ import annotations

import json
import math

import pytest

from streamgate.tgi import (
    StreamDetails,
    StreamError,
    StreamEvent,
    Token,
    parse_stream_event,
    stream_details_json,
    stream_response_json,
    token_json,
)


def _token(i: int, **extra: object) -> dict[str, object]:
    return {
        "index": i + 1,
        "token": {"id": i, "text": f"t{i} ", "logprob": -0.25, "special": False},
        "top_tokens": [],
        "generated_text": None,
        "details": None,
        **extra,
    }


LAST = _token(
    2,
    generated_text="t0 t1 t2 ",
    details={"finish_reason": "length", "generated_tokens": 3, "seed": 7, "input_length": 4},
)
PAYLOADS = [json.dumps(e, separators=(",", ":")).encode() for e in (_token(0), _token(1), LAST)]


def test_decode_token_and_last_event() -> None:
    first = parse_stream_event(PAYLOADS[0])
    assert isinstance(first, StreamEvent)
    assert (first.index, first.token.id, first.token.text) == (1, 0, "t0 ")
    assert first.token.logprob == -0.25 and not first.token.special
    assert not first.final and first.details is None
    last = parse_stream_event(PAYLOADS[2])
    assert isinstance(last, StreamEvent)
    assert last.final and last.generated_text == "t0 t1 t2 "
    assert last.details is not None
    assert last.details.finish_reason == "length"
    assert (last.details.generated_tokens, last.details.seed, last.details.input_length) == (
        3,
        7,
        4,
    )


def test_decode_top_tokens_and_missing_optional_fields() -> None:
    payload = {
        "index": 1,
        "token": {"id": 5, "text": "", "logprob": None, "special": True},
        "top_tokens": [{"id": 5, "text": "a", "logprob": -0.1, "special": False}],
        "generated_text": "",
        "details": {"finish_reason": "eos_token", "generated_tokens": 1},
    }
    event = parse_stream_event(json.dumps(payload))
    assert isinstance(event, StreamEvent)
    assert event.token.logprob is None and event.token.special and event.token.text == ""
    assert [t.text for t in event.top_tokens] == ["a"]
    assert event.final and event.details is not None
    assert event.details.input_length is None and event.details.seed is None


def test_decode_error_event() -> None:
    error = parse_stream_event(b'{"error":"Model is overloaded","error_type":"overloaded"}')
    assert error == StreamError("Model is overloaded", "overloaded")
    assert parse_stream_event(b'{"error":"boom"}') == StreamError("boom", None)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"index":1,"token":{"id":',  # cut JSON
        b"not json",
        b"\xff\xfe",  # not UTF-8
        b"[1, 2]",  # not an object
        b'{"index": 1}',  # neither token nor error
        b'{"index":1,"token":{"id":1}}',  # token without text
        b'{"index":1,"token":{"id":1,"text":5,"logprob":null,"special":false}}',
        b'{"index":1,"token":{"id":1,"text":"a"},"details":{"generated_tokens":1}}',
    ],
)
def test_malformed_events_raise_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stream_event(payload)


def test_tolerated_oddities() -> None:
    # Not what TGI sends, but harmless: a missing index, null top tokens, a missing logprob,
    # an error event's error_type that is not a string.
    event = parse_stream_event(b'{"token":{"id":3,"text":"a"},"top_tokens":null}')
    assert event == StreamEvent(0, Token(3, "a", None, False))
    assert parse_stream_event(b'{"error":5,"error_type":7}') == StreamError("5", None)
    assert parse_stream_event(b'{"token":null,"error":"x"}') == StreamError("x", None)


def test_unknown_keys_are_ignored() -> None:
    payload = {**_token(0), "new_key": {"x": 1}}
    payload["token"] = {**payload["token"], "extra": True}  # type: ignore[dict-item]
    event = parse_stream_event(json.dumps(payload))
    assert event == StreamEvent(1, Token(0, "t0 ", -0.25, False))


def test_built_events_decode_to_what_they_were_built_from() -> None:
    token = Token(7, "h\u00e9", -0.5, False)
    top = (Token(7, "h\u00e9", -0.5, False), Token(9, "x", -1.5, True))
    plain = stream_response_json(3, token, top)
    assert list(plain) == ["index", "token", "top_tokens", "generated_text", "details"]
    assert parse_stream_event(json.dumps(plain)) == StreamEvent(3, token, top)

    details = stream_details_json(
        finish_reason="eos_token", generated_tokens=3, seed=None, input_length=5, cached_tokens=2
    )
    last = stream_response_json(4, token, (), generated_text="abc", details=details)
    assert last["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": 3,
        "seed": None,
        "input_length": 5,
        "cached_tokens": 2,  # ours: TGI clients ignore it
    }
    decoded = parse_stream_event(json.dumps(last))
    assert isinstance(decoded, StreamEvent) and decoded.final
    assert decoded.details == StreamDetails("eos_token", 3, 5, None)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_logprob_that_is_not_finite_is_null(value: float) -> None:
    assert token_json(Token(1, "a", value, False))["logprob"] is None
