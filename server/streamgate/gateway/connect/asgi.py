"""The few ASGI types and helpers the browser door's own handlers use (the page, CORS, JSON
lines); the Connect runtime brings its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

__all__ = [
    "App",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "encode_headers",
    "header",
    "request_headers",
    "respond",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers: TypeAlias = list[tuple[bytes, bytes]]


def request_headers(scope: Scope) -> list[tuple[str, str]]:
    """The request's headers as text, names in lower case (ASGI sends them so)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]


def header(scope: Scope, name: str) -> str:
    """The first value of the request header `name` (lower case), "" when absent."""
    key = name.encode()
    for k, v in scope.get("headers", ()):
        if k == key:
            return str(v.decode("latin-1"))
    return ""


def encode_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """Text headers as ASGI sends them."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def respond(
    send: Send, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> None:
    """A whole response."""
    await send(
        {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
    )
    await send({"type": "http.response.body", "body": body})
