"""The composition root: every long-lived object is created here, once, and wired together.

    await serve(load_config(path))           # run until SIGTERM/SIGINT (the `serve` command)

    gateway = await start_gateway(config)    # or: start, use, shut down (tests, benchmarks)
    ...
    await gateway.shutdown()

Start order: embedded engine (when no backends are configured) → backend sessions → first health
check (limits and model ids known before the first request) → metrics server → gRPC server.
Shutdown (`RunningGateway.shutdown`): stop accepting (health NOT_SERVING, new calls UNAVAILABLE
with RetryInfo), let running streams finish within the grace period, then interrupt them
(UNAVAILABLE, their backend streams closed), stop the server, close sessions, stop the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from streamgate.admission import AdmissionQueue
from streamgate.cache import InvalidationFeed, LocalCache, RedisTier, TieredCache
from streamgate.config import (
    EMBEDDED_BACKEND,
    BackendConfig,
    ConfigError,
    GatewayConfig,
)
from streamgate.gateway.admin import AdminService
from streamgate.gateway.calls import ActiveCall, CallRegistry
from streamgate.gateway.embedded import EmbeddedEngine
from streamgate.gateway.errors import GatewayError, Reason
from streamgate.gateway.health import HealthMonitor, HealthPolicy
from streamgate.gateway.load import LoadMonitor
from streamgate.gateway.reflection import enable_reflection
from streamgate.gateway.server import create_server, listen
from streamgate.gateway.service import GenerationService, ServiceSettings
from streamgate.gateway.shadow import ShadowSender
from streamgate.gateway.topology import Topology, build_topology
from streamgate.routing import (
    Replica,
    RouteTable,
)
from streamgate.tasks import cancel_and_wait
from streamgate.telemetry.logging import configure_logging, get_logger
from streamgate.telemetry.metrics import GatewayMetrics, MetricsServer
from streamgate.tenancy import Tenancy
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import admin_pb2_grpc as admin_grpc
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

__all__ = [
    "ADMIN_SERVICE",
    "GENERATION_SERVICE",
    "HEALTH_SERVICE",
    "RunningGateway",
    "serve",
    "start_gateway",
]

log = get_logger(__name__)

GENERATION_SERVICE: str = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
ADMIN_SERVICE: str = admin_pb.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
# After the grace period, interrupted calls get this long to send their status.
_INTERRUPT_WAIT_SECONDS = 5.0
# The config sections a reload applies (gateway/topology.py); the others need a restart.
_RELOADED = frozenset({"backends", "pools", "routes", "rules", "default_route"})
# How often a removed backend is checked for running streams before its session closes.
_IDLE_POLL_SECONDS = 0.2


@dataclass
class RunningGateway:
    """A started gateway: its addresses, and its parts for shutdown."""

    address: str
    """`host:port` of the gRPC server."""
    metrics_url: str | None
    config: GatewayConfig
    _server: grpc.aio.Server
    _calls: CallRegistry
    _monitor: HealthMonitor
    _load: LoadMonitor
    _service: GenerationService
    _live: _Live
    _backends_of_embedded: list[BackendConfig] | None
    """The embedded engine's backend (None: backends are configured)."""
    _stack: AsyncExitStack
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _shutdown: asyncio.Task[None] | None = None

    @property
    def routes(self) -> RouteTable:
        """The routes in use."""
        return self._live.topology.routes

    async def reload(self, config: GatewayConfig) -> None:
        """Apply `config`'s backends, pools, routes, rules and chat templates to new calls;
        running streams finish where they are. Removed backends drain, then their sessions
        close. Other sections (listen, auth, tenants, admission, limits, ...) need a restart:
        their changes are logged and ignored. Raises ConfigError (nothing is changed then)."""
        if config.uses_embedded_engine != self.config.uses_embedded_engine:
            raise ConfigError("switching between the embedded engine and backends needs a restart")
        backends = self._backends_of_embedded or list(config.backends)
        previous = self._live.topology
        topology = build_topology(config, backends, previous)
        ignored = [
            name
            for name in type(config).model_fields
            if name not in _RELOADED and getattr(config, name) != getattr(self.config, name)
        ]
        if ignored:
            log.warning("reload: these sections need a restart to change", sections=ignored)
        await self._live.start_sessions(topology.new_replicas(previous))
        await _watch(topology, self._monitor, self._load)
        self._service.use(topology)
        self._live.topology = topology
        self._live.retire(topology.gone_replicas(previous))
        self.config = config.model_copy(update={k: getattr(self.config, k) for k in ignored})
        log.info(
            "configuration reloaded",
            routes={r.name: [x.name for x in r.replicas] for r in topology.routes},
            rules=[rule.name for rule in topology.router.rules],
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

    async def wait_stopped(self) -> None:
        """Wait until `shutdown` completed."""
        await self._stopped.wait()

    async def _drain_and_stop(self, grace: float | None) -> None:
        grace = self.config.limits.shutdown_grace_seconds if grace is None else grace
        try:
            self._calls.start_draining()
            await self._monitor.drain()
            running = len(self._calls)
            log.info("draining", running_calls=running, grace_seconds=grace)
            idle = self._calls.wait_idle(grace)
            hurry = self._hurry.wait()
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(idle), asyncio.ensure_future(hurry)],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
            if len(self._calls):
                n = self._calls.interrupt_all(_shutdown_error)
                log.warning("grace period over: interrupting calls", calls=n)
                await self._calls.wait_idle(_INTERRUPT_WAIT_SECONDS)
            # Whatever is left (health Watch streams, calls that did not end) is cancelled.
            await self._server.stop(grace=1.0)
            await self._monitor.stop()
        finally:
            await self._stack.aclose()
            self._stopped.set()
            log.info("stopped")


def _shutdown_error(call: ActiveCall) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.DRAINING,
        "the gateway shut down before the stream finished; retry on another instance",
    )


async def _cache(
    config: GatewayConfig, metrics: GatewayMetrics, stack: AsyncExitStack
) -> TieredCache:
    """The local tier, and the shared one when configured (connected before serving: a Redis
    that is down is logged, and the gateway serves without it until it answers)."""
    settings = config.cache
    evictions = metrics.cache_evictions.labels("local")
    local = LocalCache(settings.max_entries, settings.max_bytes, on_evict=evictions.inc)
    metrics.cache_entries.labels("local").set_function(lambda: len(local))
    metrics.cache_bytes.labels("local").set_function(lambda: local.bytes)
    shared: RedisTier | None = None
    feed: InvalidationFeed | None = None
    if settings.enabled and settings.redis is not None:
        redis = settings.redis
        shared = RedisTier(
            redis.url,
            timeout=redis.timeout_seconds,
            admin_timeout=redis.admin_timeout_seconds,
            reconnect_seconds=redis.reconnect_seconds,
            max_connections=redis.max_connections,
            key_prefix=redis.key_prefix,
            observe=metrics.observe_redis,
        )
        await shared.start()
        stack.push_async_callback(shared.close)
        tier = shared
        metrics.redis_up.set_function(lambda: 1.0 if tier.state == "up" else 0.0)
        feed = InvalidationFeed(
            redis.url,
            channel=redis.key_prefix + "invalidations",
            timeout=redis.admin_timeout_seconds,
            reconnect_seconds=redis.reconnect_seconds,
        )
        stack.push_async_callback(feed.close)
    return TieredCache(local, shared, feed)


async def start_gateway(config: GatewayConfig) -> RunningGateway:
    """Build and start everything; the gateway accepts calls when this returns.

    Raises ConfigError (e.g. a chat template that does not compile), EmbeddedEngineError, or
    OSError (the port is taken).
    """
    stack = AsyncExitStack()
    try:
        return await _start(config, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _start(config: GatewayConfig, stack: AsyncExitStack) -> RunningGateway:
    tenancy = Tenancy.from_config(config)
    backends = list(config.backends)
    if config.uses_embedded_engine:
        engine = EmbeddedEngine(config.embedded)
        url = await engine.start()
        stack.push_async_callback(engine.stop)
        backends = [BackendConfig(name=EMBEDDED_BACKEND, url=url)]
    topology = build_topology(config, backends)

    metrics = GatewayMetrics()
    metrics_url: str | None = None
    if config.metrics.enabled:
        metrics_server = MetricsServer(metrics, config.metrics.host, config.metrics.port)
        metrics_url = await metrics_server.start()
        stack.push_async_callback(metrics_server.stop)

    health_servicer = health.aio.HealthServicer()
    state = _Live(topology)

    def rejoined(replica: Replica) -> None:
        for pool in state.topology.pools.values():
            pool.forget(replica)

    monitor = HealthMonitor(health_servicer, [GENERATION_SERVICE], metrics, on_rejoin=rejoined)
    stack.push_async_callback(monitor.stop)
    # One interval for all: the smallest configured (each scrape is one small GET).
    load = LoadMonitor(min(b.load_interval_seconds for b in backends), metrics)
    stack.push_async_callback(load.stop)
    stack.push_async_callback(state.close_sessions)
    await state.start_sessions(topology.new_replicas(None))
    await _watch(topology, monitor, load)
    if not monitor.serving:
        log.warning("no backend is healthy yet", backends=[b.name for b in backends])

    calls = CallRegistry()
    cache = await _cache(config, metrics, stack)
    shadow = ShadowSender(metrics)
    stack.push_async_callback(shadow.stop)
    admission = config.admission
    queue = AdmissionQueue(
        admission.max_active_streams, admission.max_queued, admission.max_queue_wait_seconds
    )
    metrics.watch_queue(lambda: queue.queued, lambda: queue.active)
    service = GenerationService(
        topology,
        ServiceSettings.from_config(config),
        calls,
        tenancy,
        queue,
        shadow,
        cache,
        metrics,
        on_backend_failure=monitor.check_soon,
    )
    stack.push_async_callback(service.close)
    server = create_server(config.listen)
    pb_grpc.add_GenerationServiceServicer_to_server(service, server)
    admin_grpc.add_AdminServiceServicer_to_server(AdminService(tenancy, cache, service), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, [GENERATION_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE])
    address = listen(server, config.listen)
    await server.start()
    stack.push_async_callback(server.stop, None)
    monitor.start()
    load.start()
    log.info(
        "gateway started",
        address=address,
        routes={r.name: [x.name for x in r.replicas] for r in topology.routes},
        metrics=metrics_url,
    )
    return RunningGateway(
        address=address,
        metrics_url=metrics_url,
        config=config,
        _server=server,
        _calls=calls,
        _monitor=monitor,
        _load=load,
        _service=service,
        _live=state,
        _backends_of_embedded=backends if config.uses_embedded_engine else None,
        _stack=stack,
    )


@dataclass
class _Live:
    """The topology in use, and the sessions of its replicas (and of draining ones)."""

    topology: Topology
    draining: set[asyncio.Task[None]] = field(default_factory=set)

    async def start_sessions(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            await replica.backend.start()

    def retire(self, replicas: list[Replica]) -> None:
        """Take replicas out of use: their running streams finish, then sessions close."""
        for replica in replicas:
            replica.draining = True
            task = asyncio.create_task(_close_when_idle(replica))
            self.draining.add(task)
            task.add_done_callback(self.draining.discard)

    async def close_sessions(self) -> None:
        await cancel_and_wait(self.draining)
        for replica in self.topology.replicas.values():
            await replica.backend.close()


async def _close_when_idle(replica: Replica) -> None:
    try:
        # in_flight is a plain counter: polling it a few times a second is enough here.
        while replica.in_flight > 0:  # noqa: ASYNC110
            await asyncio.sleep(_IDLE_POLL_SECONDS)
    finally:
        await replica.backend.close()
        log.info("backend removed", backend=replica.name)


async def _watch(topology: Topology, monitor: HealthMonitor, load: LoadMonitor) -> None:
    """Point the health checks and the load scraping at the topology's replicas."""
    pairs = [
        (r, HealthPolicy(b.health_interval_seconds, b.health_rise, b.health_fall))
        for r, b in zip(topology.replicas.values(), topology.backends.values(), strict=True)
    ]
    await monitor.watch(pairs)
    load.watch(list(topology.replicas.values()))


async def serve(config: GatewayConfig, reload: Callable[[], GatewayConfig] | None = None) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut it down gracefully.

    Configures logging, starts everything (the embedded engine too when no backends are
    configured), prints `streamgate listening on HOST:PORT (routes: ...)` on stdout once calls
    are accepted, and returns after a clean shutdown. A second signal cuts the grace period
    short. SIGHUP applies `reload()`'s configuration (`RunningGateway.reload`); a bad one is
    logged and changes nothing. Raises ConfigError, EmbeddedEngineError or OSError when it
    cannot start.
    """
    configure_logging(config.logging)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    gateway: RunningGateway | None = None

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and gateway is not None:
            log.warning("second signal: interrupting running streams", signal=sig.name)
            gateway.hurry()
            return
        log.info("signal received: shutting down", signal=sig.name)
        stop.set()

    reloads: set[asyncio.Task[None]] = set()

    async def apply_reload() -> None:
        if gateway is None or reload is None:
            return
        try:
            await gateway.reload(reload())
        except ConfigError as err:
            log.error("reload failed: the configuration in use is unchanged", error=str(err))

    def on_hangup() -> None:
        task = asyncio.create_task(apply_reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        # A signal during startup (the engine may load for a while) stops cleanly too.
        starting = asyncio.create_task(start_gateway(config))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        gateway = starting.result()
        print(gateway.ready_line(), gateway.try_it(), sep="\n", flush=True)
        await stop.wait()
        await gateway.shutdown()
    finally:
        for sig in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
