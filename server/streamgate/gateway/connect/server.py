"""The browser door's HTTP server: Hypercorn in the gateway's own event loop (HTTP/1.1, and
HTTP/2 over TLS or with prior knowledge), serving the router on `listen.http`.

Hypercorn was picked by measurement among the ASGI servers that speak HTTP/2 (docs/benchmarks.md,
"Connect endpoint"). The port is bound here, before the server starts, so that a busy port fails
the gateway's start and port 0 reports the port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import cast

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from streamgate.config import ListenConfig
from streamgate.gateway.connect.asgi import App
from streamgate.telemetry.logging import get_logger

__all__ = ["HttpServer"]

log = get_logger(__name__)

# Calls have drained (or were interrupted) when the server stops: connections need only close.
_CLOSE_SECONDS = 2.0


class HttpServer:
    """`app` on `listen.http`'s address (`start`, then `stop`)."""

    def __init__(self, app: App, listen: ListenConfig) -> None:
        self._app = app
        self._listen = listen
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Listen; returns the page's URL (`http://host:port/`). Raises OSError when the port
        cannot be bound or the TLS files cannot be used."""
        http = self._listen.http
        config = Config()
        config.accesslog = None  # the gateway logs each call itself
        # Hypercorn's own lines go through the root logger like every other (telemetry/
        # logging.py); its info lines ("Running on ...") repeat the gateway's start line.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.errorlog.setLevel(max(config.errorlog.getEffectiveLevel(), logging.WARNING))
        config.graceful_timeout = _CLOSE_SECONDS
        config.h2_max_concurrent_streams = self._listen.max_concurrent_streams
        config.include_server_header = False
        if http.tls is not None:
            config.certfile = str(http.tls.cert_file)
            config.keyfile = str(http.tls.key_file)
            if http.tls.client_ca_file is not None:
                config.ca_certs = str(http.tls.client_ca_file)
                config.verify_mode = ssl.CERT_REQUIRED if http.tls.mutual else ssl.CERT_OPTIONAL
            try:
                config.create_ssl_context()  # fail now rather than at the first connection
            except (ssl.SSLError, OSError) as err:
                raise OSError(f"listen.http.tls: {err}") from None
        sock = _bind(http.host, http.port)
        port = sock.getsockname()[1]
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here
        # Hypercorn types ASGI messages as TypedDicts; the door reads them as plain mappings.
        app = cast(ASGIFramework, self._app)
        self._task = asyncio.create_task(serve(app, config, shutdown_trigger=self._stopping.wait))
        self._task.add_done_callback(self._ended)
        scheme = "https" if http.tls is not None else "http"
        host = f"[{http.host}]" if ":" in http.host else http.host
        return f"{scheme}://{host}:{port}/"

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not self._stopping.is_set() and not task.cancelled() and task.exception():
            log.error("the browser endpoint stopped serving", error=repr(task.exception()))

    async def stop(self) -> None:
        """Stop accepting, close the connections."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(self._task, _CLOSE_SECONDS * 2)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception:
            log.exception("the browser endpoint's server failed")


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (OSError naming the address when it cannot)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Connections wait in the backlog until the server accepts them.
        sock.listen(100)
    except OSError as err:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} (listen.http): {err.strerror or err}"
        ) from None
    return sock
