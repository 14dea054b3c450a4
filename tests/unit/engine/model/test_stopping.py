"""Stop sequences found in the generated text, wherever the token boundaries fall."""

import random

import pytest

from streamgate.engine.model.stopping import StopMatcher


def test_no_stop_sequences_never_stop() -> None:
    matcher = StopMatcher([])
    assert not any(matcher.push(piece) for piece in ["a", "STOP", "</s>", ""])


def test_empty_strings_are_ignored() -> None:
    matcher = StopMatcher(["", "end"])
    assert not matcher.push("x")
    assert matcher.push("the end")


def test_match_inside_one_piece() -> None:
    matcher = StopMatcher(["STOP"])
    assert not matcher.push("go on ")
    assert matcher.push("and STOP here")  # not only at the end of the text


def test_match_across_pieces() -> None:
    matcher = StopMatcher(["\n\nUser:"])
    assert not matcher.push("Sure.\n")
    assert not matcher.push("\nUs")
    assert matcher.push("er: hi")


def test_match_straddling_many_single_char_pieces() -> None:
    matcher = StopMatcher(["abcdef"])
    results = [matcher.push(c) for c in "xxabcdef"]
    assert results == [False] * 7 + [True]


def test_empty_pieces_change_nothing() -> None:
    matcher = StopMatcher(["ab"])
    assert not matcher.push("a")
    assert not matcher.push("")
    assert matcher.push("b")


def test_no_false_match() -> None:
    matcher = StopMatcher(["abc"])
    assert not any(matcher.push(piece) for piece in ["ab", "x", "bc", "a", "b", "d", "c"])


def test_several_stop_sequences() -> None:
    matcher = StopMatcher(["###", "中文"])
    assert not matcher.push("text 中")
    assert matcher.push("文")


def test_stop_stays_reported() -> None:
    matcher = StopMatcher(["!"])
    assert matcher.push("hi!")
    assert matcher.push("more")


def test_keeps_only_a_bounded_tail() -> None:
    matcher = StopMatcher(["abcde", "xy"])
    for _ in range(100):
        assert not matcher.push("z" * 1000)
    assert len(matcher._tail) <= 4
    assert not matcher.push("zzab")
    assert matcher.push("cdez")


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_searching_the_whole_text(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["".join(rng.choices("ab", k=rng.randrange(1, 5))) for _ in range(3)]
    matcher = StopMatcher(stops)
    text = ""
    for _ in range(30):
        piece = "".join(rng.choices("abc", k=rng.randrange(0, 4)))
        text += piece
        assert matcher.push(piece) == any(stop in text for stop in stops), (stops, text)
