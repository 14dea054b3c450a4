"""A started gateway: its reload (SIGHUP) and its graceful shutdown.

Shutdown (`RunningGateway.shutdown`): stop accepting (health NOT_SERVING, new calls UNAVAILABLE
with RetryInfo), let running streams finish within the grace period, then interrupt them
(UNAVAILABLE, their backend streams closed), stop the server, close sessions, stop the engine.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc

from streamgate.config import BackendConfig, ConfigError, GatewayConfig
from streamgate.gateway.calls import CallRegistry
from streamgate.gateway.fleet.fleet import Fleet
from streamgate.gateway.fleet.topology import build_topology
from streamgate.gateway.pipeline.errors import GatewayError, Reason
from streamgate.gateway.pipeline.run import Pipeline
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.routing import RouteTable
from streamgate.telemetry.logging import get_logger

__all__ = ["RunningGateway"]

log = get_logger(__name__)

# After the grace period, interrupted calls get this long to send their status.
_INTERRUPT_WAIT_SECONDS = 5.0
# The config sections a reload applies (fleet/topology.py); the others need a restart.
_RELOADED = frozenset({"backends", "pools", "routes", "rules", "default_route"})


@dataclass
class RunningGateway:
    """A started gateway: its addresses, and its parts for reloads and shutdown."""

    address: str
    """`host:port` of the gRPC server."""
    metrics_url: str | None
    config: GatewayConfig
    server: grpc.aio.Server
    calls: CallRegistry
    fleet: Fleet
    pipeline: Pipeline
    embedded_backends: list[BackendConfig] | None
    """The embedded engine's backend (None: backends are configured)."""
    stack: AsyncExitStack
    """Stops everything started, in reverse order."""
    page_url: str | None = None
    """The browser door's URL, where the chat page is (None: `listen.http` is off)."""
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)
    _shutdown: asyncio.Task[None] | None = None

    @property
    def routes(self) -> RouteTable:
        """The routes in use."""
        return self.fleet.topology.routes

    async def reload(self, config: GatewayConfig) -> None:
        """Apply `config`'s backends, pools, routes, rules and chat templates to new calls;
        running streams finish where they are. Removed backends drain, then their sessions
        close. Other sections (listen, auth, tenants, admission, limits, ...) need a restart:
        their changes are logged and ignored. Raises ConfigError (nothing is changed then)."""
        if config.uses_embedded_engine != self.config.uses_embedded_engine:
            raise ConfigError("switching between the embedded engine and backends needs a restart")
        backends = self.embedded_backends or list(config.backends)
        topology = build_topology(config, backends, self.fleet.topology)
        ignored = [
            name
            for name in type(config).model_fields
            if name not in _RELOADED and getattr(config, name) != getattr(self.config, name)
        ]
        if ignored:
            log.warning("reload: these sections need a restart to change", sections=ignored)
        await self.fleet.use(topology)
        self.pipeline.use(topology.routing)
        self.config = config.model_copy(update={k: getattr(self.config, k) for k in ignored})
        log.info(
            "configuration reloaded",
            routes={r.name: [x.name for x in r.replicas] for r in topology.routes},
            rules=[rule.name for rule in topology.routing.router.rules],
        )

    def ready_line(self) -> str:
        """The line `serve` prints once the gateway accepts calls."""
        names = [
            r.name + (" (default)" if r.name == self.routes.default else "") for r in self.routes
        ]
        if len(names) == 1:
            names = [self.routes.default]
        metrics = f"; metrics: {self.metrics_url}" if self.metrics_url else ""
        return f"streamgate listening on {self.address} (routes: {', '.join(names)}{metrics})"

    def try_it(self) -> str:
        """Two commands that stream a reply from this gateway, printed after the ready line."""
        method = "streamgate.v1.GenerationService/GenerateStream"
        ours, theirs = "", "-plaintext"
        tls = self.config.listen.tls
        if tls is not None:
            ours, theirs = " --ca-file CA.pem", "-cacert CA.pem"
            if tls.mutual:
                ours += " --cert-file CLIENT.pem --key-file CLIENT.key"
                theirs += " -cert CLIENT.pem -key CLIENT.key"
        if self.config.auth.enabled:
            ours += " --api-key KEY"
            theirs += " -H 'authorization: Bearer KEY'"
        return (
            f"  try: streamgate generate --target {self.address}{ours} 'Hello'\n"
            f'   or: grpcurl {theirs} -d \'{{"prompt": "Hello"}}\' {self.address} {method}'
        )

    def hurry(self) -> None:
        """Cut the grace period short: interrupt running streams now (a second signal)."""
        self._hurry.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and stop (idempotent; concurrent callers wait for the same shutdown).

        `grace`: seconds running streams may take to finish (default: the configured one).
        """
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._drain_and_stop(grace))
        await asyncio.shield(self._shutdown)

    async def _drain_and_stop(self, grace: float | None) -> None:
        grace = self.config.limits.shutdown_grace_seconds if grace is None else grace
        try:
            self.calls.start_draining()
            await self.fleet.health.drain()
            log.info("draining", running_calls=len(self.calls), grace_seconds=grace)
            idle = asyncio.ensure_future(self.calls.wait_idle(grace))
            hurry = asyncio.ensure_future(self._hurry.wait())
            _, pending = await asyncio.wait({idle, hurry}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if len(self.calls):
                n = self.calls.interrupt_all(_shutdown_error)
                log.warning("grace period over: interrupting calls", calls=n)
                await self.calls.wait_idle(_INTERRUPT_WAIT_SECONDS)
            # Whatever is left (health Watch streams, calls that did not end) is cancelled.
            await self.server.stop(grace=1.0)
        finally:
            await self.stack.aclose()
            log.info("stopped")


def _shutdown_error(call: Call) -> GatewayError:
    return GatewayError(
        Reason.DRAINING,
        "the gateway shut down before the stream finished; retry on another instance",
    )
