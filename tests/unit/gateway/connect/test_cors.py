"""Who may call the browser door: its own origin, requests without one (curl), and the
allow-list; preflights and response headers for an allowed origin."""

from __future__ import annotations

from typing import Any

from streamgate.gateway.connect.cors import Cors

ALLOWED = "https://chat.example.com"


def scope(origin: str = "", host: str = "127.0.0.1:8080", **headers: str) -> dict[str, Any]:
    raw = [(b"host", host.encode())]
    if origin:
        raw.append((b"origin", origin.encode()))
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "scheme": "http", "headers": raw}


def test_same_origin_and_no_origin_need_no_cors() -> None:
    cors = Cors([ALLOWED])
    assert cors.origin(scope()) == ""
    assert cors.origin(scope("http://127.0.0.1:8080")) == ""
    assert cors.origin(scope("HTTP://127.0.0.1:8080")) == ""


def test_only_listed_origins_may_call_from_elsewhere() -> None:
    cors = Cors([ALLOWED])
    assert cors.origin(scope(ALLOWED)) == ALLOWED
    assert cors.origin(scope("https://evil.example")) is None
    assert cors.origin(scope("http://127.0.0.1:9999")) is None  # another port is another origin
    assert Cors([]).origin(scope(ALLOWED)) is None


def test_a_preflight_allows_the_requested_headers() -> None:
    cors = Cors([ALLOWED])
    request = scope(
        ALLOWED, access_control_request_headers="authorization,content-type,connect-timeout-ms"
    )
    headers = dict(cors.preflight(request, ALLOWED))
    assert headers["access-control-allow-origin"] == ALLOWED
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == (
        "authorization,content-type,connect-timeout-ms"
    )
    assert headers["vary"] == "origin"


def test_responses_expose_the_call_metadata() -> None:
    headers = dict(Cors([ALLOWED]).response(ALLOWED))
    exposed = headers["access-control-expose-headers"].split(", ")
    for name in ("x-request-id", "x-route", "x-backend", "x-cache-status", "grpc-status"):
        assert name in exposed
    assert "x-ratelimit-remaining-requests" in exposed
