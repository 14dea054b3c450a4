"""The shared tier's encoding of a cached answer: every field round trips; unreadable values
are errors, not crashes."""

from __future__ import annotations

import pytest

from streamgate.cache import CachedResponse
from streamgate.cache.codec import decode, encode
from streamgate.tgi import StreamDetails, StreamEvent, Token


def test_the_shared_tier_codec_round_trips_every_field() -> None:
    top = (Token(id=7, text="é", logprob=-0.5, special=False),)
    events = (
        StreamEvent(index=0, token=Token(id=1, text="a\n", logprob=-0.25, special=False),
                    top_tokens=top),
        StreamEvent(index=1, token=Token(id=2, text="", logprob=None, special=True),
                    generated_text="a\n",
                    details=StreamDetails("eos_token", 2, input_length=5, seed=42)),
    )  # fmt: skip
    entry = CachedResponse(
        events, scope="tenant:a/x", model="m@1", backend="b", pool="p", input_tokens=5, seed=42
    )
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"format": 2}',
        b'{"format": 1, "scope": "s", "model": "m", "backend": "b", "pool": "p", '
        b'"input_tokens": 1, "seed": null, "events": []}',  # no last event
        b'{"format": 1, "scope": "s", "model": "m", "backend": "b", "pool": "p", '
        b'"input_tokens": 1, "seed": null, "events": [{"i": 0, "t": [1, "x"]}]}',
        b"\xff\xfe",
    ],
)
def test_an_unreadable_shared_value_is_an_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)
