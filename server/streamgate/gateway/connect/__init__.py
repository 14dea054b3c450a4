"""The browser door: `streamgate.v1` over Connect (JSON and binary), gRPC-Web and JSON lines, on
HTTP/1.1 and HTTP/2 (`listen.http`), driving the same pipeline as the gRPC door; and the chat
page at `/` (docs/api.md, "Browsers and curl").

| module | job |
|---|---|
| `server.py` | Hypercorn in the gateway's event loop, on the configured port |
| `router.py` | the ASGI application: origin check, then the services, JSON lines or the page |
| `cors.py` | same-origin and the allow-list; CORS preflights and headers |
| `services.py` | the services on the Connect runtime, and its interceptors |
| `door.py` | every call's life: the Call from headers, authentication, draining, its end |
| `errors.py` | a GatewayError as a Connect error with the google.rpc details |
| `jsonlines.py` | GenerateStream as JSON lines (curl) |
| `page.py` | the chat page's files (`make web` builds them into `page/`) |
| `v1/` | the Connect runtime's generated glue (`make connect-protos`) |
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from streamgate.config import ListenConfig
from streamgate.gateway.connect.router import build_router
from streamgate.gateway.connect.server import HttpServer
from streamgate.telemetry.metrics import GatewayMetrics

if TYPE_CHECKING:
    from streamgate.gateway.app import Core

__all__ = ["start_browser_door"]


async def start_browser_door(
    listen: ListenConfig, core: Core, metrics: GatewayMetrics, stack: AsyncExitStack
) -> str:
    """Serve the browser door on `listen.http` until `stack` closes; returns the page's URL."""
    server = HttpServer(build_router(core, metrics, listen), listen)
    url = await server.start()
    stack.push_async_callback(server.stop)
    return url
