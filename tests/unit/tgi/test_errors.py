"""TGI's error bodies and how a client classifies them: error_type first, then the status."""

from __future__ import annotations

import pytest

from streamgate.tgi import error_json, error_kind, excerpt, parse_error_body


@pytest.mark.parametrize(
    ("error_type", "status", "kind"),
    [
        ("overloaded", None, "overloaded"),
        ("validation", None, "validation"),
        ("template_error", None, "validation"),
        ("incomplete_generation", None, "generation"),
        ("something_new", None, "generation"),  # an unknown in-stream error
        (None, None, "generation"),
        # The error_type decides over the status.
        ("overloaded", 500, "overloaded"),
        ("validation", 503, "validation"),
        # Without a known error_type, the status (a proxy's answer, an older TGI).
        (None, 429, "overloaded"),
        (None, 400, "validation"),
        (None, 413, "validation"),
        (None, 422, "validation"),
        ("healthcheck", 424, "generation"),
        (None, 404, "unavailable"),
        (None, 502, "unavailable"),
    ],
)
def test_error_kind(error_type: str | None, status: int | None, kind: str) -> None:
    assert error_kind(error_type, status) == kind


def test_error_bodies() -> None:
    assert error_json("Model is overloaded", "overloaded") == {
        "error": "Model is overloaded",
        "error_type": "overloaded",
    }
    assert parse_error_body(b'{"error":"boom","error_type":"generation","x":1}') == (
        "boom",
        "generation",
    )
    assert parse_error_body(b'{"error":"boom","error_type":5}') == ("boom", None)
    assert parse_error_body('{"error": 3}') == ("3", None)
    for not_one in (b"<html>bad gateway</html>", b"[1]", b'{"message":"x"}', b"\xff", b""):
        assert parse_error_body(not_one) is None


def test_excerpt() -> None:
    assert excerpt(b"short") == "short"
    assert excerpt("x" * 300) == "x" * 200 + "..."
    assert excerpt(b"\xffa") == "\ufffda"
