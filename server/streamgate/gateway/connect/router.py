"""The browser door's one ASGI application: the origin check (cors.py), then by path

- `/streamgate.v1.GenerationService/*`, `/streamgate.v1.AdminService/*`: the Connect runtime
  (Connect JSON and binary, gRPC-Web), or JSON lines for an unframed JSON GenerateStream;
- anything else: the chat page's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec

from streamgate.config import ListenConfig
from streamgate.gateway.connect.asgi import (
    App,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    encode_headers,
    respond,
)
from streamgate.gateway.connect.cors import Cors
from streamgate.gateway.connect.door import Door
from streamgate.gateway.connect.jsonlines import JsonLines, wants_json_lines
from streamgate.gateway.connect.page import Page
from streamgate.gateway.connect.services import (
    AdminService,
    CallInterceptor,
    GenerationService,
    GuardInterceptor,
)
from streamgate.gateway.connect.v1.admin_connect import AdminServiceASGIApplication
from streamgate.gateway.connect.v1.generation_connect import GenerationServiceASGIApplication
from streamgate.gateway.grpc.admin import AdminServicer
from streamgate.telemetry.metrics import GatewayMetrics

if TYPE_CHECKING:
    from streamgate.gateway.app import Core

__all__ = ["Router", "build_router"]


class Router:
    """Dispatches each request (see the module doc).

    Args:
        services: the Connect applications by their path prefix (`/pkg.Service/`).
        json_lines: the JSON lines handler.
        page: the chat page.
        cors: who may call.
    """

    def __init__(self, services: Mapping[str, App], json_lines: App, page: App, cors: Cors):
        self._services = services
        self._json_lines = json_lines
        self._page = page
        self._cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the server closes the connection
        origin = self._cors.origin(scope)
        if origin is None:
            await respond(send, 403, [("content-type", "text/plain")], b"origin not allowed\n")
            return
        if origin and scope["method"] == "OPTIONS":
            await respond(send, 204, self._cors.preflight(scope, origin))
            return
        if origin:
            send = _adding_headers(send, encode_headers(self._cors.response(origin)))
        service = self._services.get(scope["path"].rpartition("/")[0] + "/")
        if service is None:
            await self._page(scope, receive, send)
        elif wants_json_lines(scope):
            await self._json_lines(scope, receive, send)
        else:
            await service(scope, receive, send)


def build_router(core: Core, metrics: GatewayMetrics, listen: ListenConfig) -> Router:
    """The door over `core`, the gateway's pipeline and its parts."""
    door = Door(core.tenancy, core.calls, core.finish, metrics)
    interceptors = (CallInterceptor(door), GuardInterceptor(door))
    # JSON names no unknown field: a misspelt one is an error, not a silent default.
    codecs = (
        google_protobuf_binary_codec(),
        google_protobuf_json_codec(ignore_unknown_fields=False),
    )
    size = listen.max_message_bytes
    generation = GenerationServiceASGIApplication(
        GenerationService(core.pipeline),
        interceptors=interceptors,
        read_max_bytes=size,
        codecs=codecs,
    )
    admin = AdminServiceASGIApplication(
        AdminService(AdminServicer(core.tenancy, core.parts.cache)),
        interceptors=interceptors,
        read_max_bytes=size,
        codecs=codecs,
    )
    return Router(
        services={app.path + "/": app for app in (generation, admin)},
        json_lines=JsonLines(door, core.pipeline, listen.max_message_bytes),
        page=Page(),
        cors=Cors(listen.http.cors_origins),
    )


def _adding_headers(send: Send, headers: Headers) -> Send:
    """`send` with `headers` added to the response's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return sending


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: the composition root owns everything."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
