"""Which web pages may call the browser door: its own (same origin) and the configured allow-list
(`listen.http.cors_origins`), nothing else.

A request that carries another origin is refused with 403 before any handler runs, so a page
elsewhere cannot use the door even through requests a browser sends without asking first. An
allowed origin gets the CORS answers connect-web needs: preflights for its POSTs and headers
(authorization, the Connect and gRPC-Web headers, `x-*` metadata), and the response headers it
may read (the call's metadata, the gRPC-Web status).
"""

from __future__ import annotations

from collections.abc import Iterable

from streamgate.gateway.connect.asgi import Scope, header

__all__ = ["Cors"]

# Response headers a page may read: the call's metadata and the protocols' status headers.
_EXPOSED = ", ".join(
    (
        "x-request-id",
        "x-route",
        "x-pool",
        "x-backend",
        "x-cache-status",
        "x-cache-tier",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
    )
)
_PREFLIGHT_MAX_AGE = "7200"


class Cors:
    """The origin check and CORS headers of `allowed` origins (lower case, as configured)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    def origin(self, scope: Scope) -> str | None:
        """The request's cross origin if it is allowed; "" when the request is same-origin or
        has no Origin (curl); None when its origin may not call."""
        origin = header(scope, "origin").lower()
        if not origin or origin == _own_origin(scope):
            return ""
        return origin if origin in self._allowed else None

    def preflight(self, scope: Scope, origin: str) -> list[tuple[str, str]]:
        """The headers answering an allowed origin's preflight (OPTIONS)."""
        return [
            *self._vary(origin),
            ("access-control-allow-methods", "GET, POST"),
            ("access-control-allow-headers", header(scope, "access-control-request-headers")),
            ("access-control-max-age", _PREFLIGHT_MAX_AGE),
        ]

    def response(self, origin: str) -> list[tuple[str, str]]:
        """The headers added to an allowed origin's responses."""
        return [*self._vary(origin), ("access-control-expose-headers", _EXPOSED)]

    @staticmethod
    def _vary(origin: str) -> list[tuple[str, str]]:
        return [("access-control-allow-origin", origin), ("vary", "origin")]


def _own_origin(scope: Scope) -> str:
    """The origin the request was addressed to (its scheme and Host header)."""
    host = header(scope, "host")
    return f"{scope.get('scheme', 'http')}://{host}".lower()
