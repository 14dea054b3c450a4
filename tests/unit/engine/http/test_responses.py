"""The engine's events and results as TGI's JSON."""

from __future__ import annotations

import math

from streamgate.engine.core.sequence import FinishInfo, TokenEvent, TokenInfo
from streamgate.engine.http.responses import Completed, generate_json, stream_event_json

A = TokenInfo(5, "a", -0.5)
B = TokenInfo(6, "b", math.nan, special=True)
PREFILL = (TokenInfo(1, "<s>", None), TokenInfo(9, "Hi", -2.0))


def finish(text: str = "ab", seed: int | None = None) -> FinishInfo:
    return FinishInfo("length", text, 2, 2, seed, 1, PREFILL, 0.01, 0.02)


def test_a_token_event_counts_from_one_and_carries_nothing_else() -> None:
    assert stream_event_json(TokenEvent(0, A, (A, B)), details=True, prefix="Hi") == {
        "index": 1,
        "token": {"id": 5, "text": "a", "logprob": -0.5, "special": False},
        "top_tokens": [
            {"id": 5, "text": "a", "logprob": -0.5, "special": False},
            {"id": 6, "text": "b", "logprob": None, "special": True},  # NaN: null
        ],
        "generated_text": None,
        "details": None,
    }


def test_the_last_event_carries_the_text_and_details_when_asked() -> None:
    last = TokenEvent(1, B, (), finish())
    with_details = stream_event_json(last, details=True, prefix="Hi ")
    assert with_details["index"] == 2 and with_details["generated_text"] == "Hi ab"
    assert with_details["details"] == {
        "finish_reason": "length",
        "generated_tokens": 2,
        "seed": None,
        "input_length": 2,
        "cached_tokens": 1,
    }
    without = stream_event_json(last, details=False, prefix="")
    assert without["generated_text"] == "ab" and without["details"] is None


def test_generate_json() -> None:
    best = Completed(finish("ab", seed=1), [A, B], [(A,), (B,)])
    assert generate_json(best, [], prefix="", details=False, top_tokens=True) == {
        "generated_text": "ab"
    }
    body = generate_json(best, [], prefix="Hi ", details=True, top_tokens=False)
    details = body["details"]
    assert body["generated_text"] == "Hi ab"
    assert [t["logprob"] for t in details["prefill"]] == [None, -2.0]
    assert "top_tokens" not in details and "best_of_sequences" not in details
    other = Completed(finish("ba", seed=2), [B, A], [(B,), (A,)])
    body = generate_json(best, [other], prefix="", details=True, top_tokens=True)
    assert len(body["details"]["top_tokens"]) == 2
    (loser,) = body["details"]["best_of_sequences"]
    assert (loser["generated_text"], loser["seed"]) == ("ba", 2)
    assert "cached_tokens" not in loser  # TGI's BestOfSequence has none


def test_best_of_picks_the_highest_mean_logprob() -> None:
    assert Completed(finish(), [A, TokenInfo(7, "c", -0.1)]).mean_logprob == -0.3
    assert Completed(finish(), [TokenInfo(7, "c", None)]).mean_logprob == float("-inf")
