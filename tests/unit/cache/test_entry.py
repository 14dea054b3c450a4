"""A cached answer's size estimate (what the local tier's byte bound counts)."""

from __future__ import annotations

from support.events import cached_response


def test_the_size_grows_with_the_steps_and_their_text() -> None:
    small, longer, wider = cached_response(1), cached_response(10), cached_response(1, "x" * 500)
    assert 0 < small.size < longer.size
    assert wider.size - small.size == 499
