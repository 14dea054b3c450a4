"""The composition root: every long-lived object is created here, once, and wired together.

    await serve(load_config(path))           # run until SIGTERM/SIGINT (the `serve` command)

    gateway = await start_gateway(config)    # or: start, use, shut down (tests, benchmarks)
    ...
    await gateway.shutdown()

Start order: embedded engine (when no backends are configured) → metrics server → the core
(`build_core`: the fleet's sessions and a first health check, so that limits and model ids are
known before the first request; the pipeline and its parts) → the gRPC server with its
interceptors and services → the browser door (`listen.http`, when enabled) on the same core.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from streamgate.admission import AdmissionQueue
from streamgate.cache import InvalidationFeed, LocalCache, RedisTier, TieredCache
from streamgate.config import (
    EMBEDDED_BACKEND,
    BackendConfig,
    CacheConfig,
    ConfigError,
    GatewayConfig,
)
from streamgate.gateway.calls import CallRegistry
from streamgate.gateway.fleet.embedded import EmbeddedEngine
from streamgate.gateway.fleet.fleet import Fleet
from streamgate.gateway.fleet.health import HealthMonitor, ServingStatus
from streamgate.gateway.fleet.load import LoadMonitor
from streamgate.gateway.fleet.shadow import ShadowSender
from streamgate.gateway.fleet.topology import build_topology
from streamgate.gateway.grpc.admin import AdminServicer
from streamgate.gateway.grpc.generation import GenerationServicer
from streamgate.gateway.grpc.health import GrpcHealth
from streamgate.gateway.grpc.interceptors import (
    AuthInterceptor,
    CallInterceptor,
    DrainingInterceptor,
)
from streamgate.gateway.grpc.reflection import enable_reflection
from streamgate.gateway.grpc.server import create_server, listen
from streamgate.gateway.lifecycle import RunningGateway
from streamgate.gateway.pipeline.generation import Parts
from streamgate.gateway.pipeline.run import Pipeline
from streamgate.gateway.pipeline.s05_cache import ResponseCache
from streamgate.gateway.pipeline.s06_coalesce import Flights
from streamgate.gateway.pipeline.s11_finish import Finish
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
    "Core",
    "RunningGateway",
    "build_core",
    "serve",
    "start_gateway",
]

log = get_logger(__name__)

GENERATION_SERVICE: str = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
ADMIN_SERVICE: str = admin_pb.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"


async def serve(config: GatewayConfig, reload: Callable[[], GatewayConfig] | None = None) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut it down gracefully.

    Configures logging, starts everything (the embedded engine too when no backends are
    configured), prints `streamgate listening on HOST:PORT (routes: ...)` and two commands to
    try it on stdout once calls are accepted, and returns after a clean shutdown. A second
    signal cuts the grace period short. SIGHUP applies `reload()`'s configuration
    (`RunningGateway.reload`); a bad one is logged and changes nothing. Raises ConfigError,
    EmbeddedEngineError or OSError when it cannot start.
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
        if gateway.page_url is not None:
            print(f"  chat page: {gateway.page_url}", flush=True)
        await stop.wait()
        await gateway.shutdown()
    finally:
        for sig in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)


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
    backends = list(config.backends)
    if config.uses_embedded_engine:
        engine = EmbeddedEngine(config.embedded)
        url = await engine.start()
        stack.push_async_callback(engine.stop)
        backends = [BackendConfig(name=EMBEDDED_BACKEND, url=url)]

    metrics = GatewayMetrics()
    metrics_url: str | None = None
    if config.metrics.enabled:
        metrics_server = MetricsServer(metrics, config.metrics.host, config.metrics.port)
        metrics_url = await metrics_server.start()
        stack.push_async_callback(metrics_server.stop)

    health = GrpcHealth([GENERATION_SERVICE])
    core = await build_core(config, backends, metrics, health, stack)
    fleet, pipeline, tenancy = core.fleet, core.pipeline, core.tenancy
    if not fleet.health.serving:
        log.warning("no backend is healthy yet", backends=[b.name for b in backends])
    server = create_server(
        config.listen,
        interceptors=[
            CallInterceptor(core.finish, metrics, config.limits.stall_timeout_seconds),
            DrainingInterceptor(core.calls),
            AuthInterceptor(tenancy),
        ],
    )
    pb_grpc.add_GenerationServiceServicer_to_server(GenerationServicer(pipeline), server)
    admin_grpc.add_AdminServiceServicer_to_server(AdminServicer(tenancy, core.parts.cache), server)
    health.register(server)
    enable_reflection(server, [GENERATION_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE])
    address = listen(server, config.listen)
    await server.start()
    stack.push_async_callback(server.stop, None)
    page_url: str | None = None
    if config.listen.http.enabled:
        # Imported only when enabled: the Connect runtime and Hypercorn take a while to load.
        from streamgate.gateway.connect import start_browser_door

        page_url = await start_browser_door(config.listen, core, metrics, stack)
    log.info(
        "gateway started",
        address=address,
        routes={r.name: [x.name for x in r.replicas] for r in fleet.topology.routes},
        metrics=metrics_url,
        page=page_url,
    )
    return RunningGateway(
        address=address,
        metrics_url=metrics_url,
        config=config,
        server=server,
        calls=core.calls,
        fleet=fleet,
        pipeline=pipeline,
        embedded_backends=backends if config.uses_embedded_engine else None,
        stack=stack,
        page_url=page_url,
    )


@dataclass(frozen=True)
class Core:
    """The gateway without its doors: what a transport puts in front of callers."""

    fleet: Fleet
    pipeline: Pipeline
    parts: Parts
    """The pipeline's long-lived parts (the cache, the admission queue, ...)."""
    tenancy: Tenancy
    calls: CallRegistry
    finish: Finish


async def build_core(
    config: GatewayConfig,
    backends: Sequence[BackendConfig],
    metrics: GatewayMetrics,
    serving: ServingStatus,
    stack: AsyncExitStack,
) -> Core:
    """The fleet of `backends` (sessions open, each replica checked once, monitors running)
    and the pipeline over it, with what they need; `stack` stops them."""
    monitor = HealthMonitor(serving, metrics, on_rejoin=lambda replica: fleet.forget(replica))
    # One load interval for all: the smallest configured (each scrape is one small GET).
    load = LoadMonitor(min(b.load_interval_seconds for b in backends), metrics)
    fleet = Fleet(build_topology(config, backends), monitor, load)
    stack.push_async_callback(fleet.close)
    await fleet.start()
    cache = ResponseCache(await _tiers(config.cache, metrics, stack), config.cache, config.limits,
                          metrics)  # fmt: skip
    flights = Flights()
    stack.push_async_callback(flights.close)
    shadow = ShadowSender(metrics)
    stack.push_async_callback(shadow.stop)
    admission = config.admission
    queue = AdmissionQueue(
        admission.max_active_streams, admission.max_queued, admission.max_queue_wait_seconds
    )
    metrics.watch_queue(lambda: queue.queued, lambda: queue.active)
    parts = Parts(
        limits=config.limits,
        queue=queue,
        cache=cache,
        flights=flights,
        shadow=shadow,
        metrics=metrics,
        on_backend_failure=monitor.check_soon,
    )
    return Core(
        fleet=fleet,
        pipeline=Pipeline(fleet.topology.routing, parts, max_prompt_chars=config.max_prompt_chars),
        parts=parts,
        tenancy=Tenancy.from_config(config),
        calls=CallRegistry(),
        finish=Finish(metrics, cache, log_prompts=config.logging.log_prompts),
    )


async def _tiers(
    config: CacheConfig, metrics: GatewayMetrics, stack: AsyncExitStack
) -> TieredCache:
    """The local tier, and the shared one when configured (connected before serving: a Redis
    that is down is logged, and the gateway serves without it until it answers)."""
    evictions = metrics.cache_evictions.labels("local")
    local = LocalCache(config.max_entries, config.max_bytes, on_evict=evictions.inc)
    metrics.cache_entries.labels("local").set_function(lambda: len(local))
    metrics.cache_bytes.labels("local").set_function(lambda: local.bytes)
    if not config.enabled or config.redis is None:
        return TieredCache(local)
    shared = RedisTier(config.redis, observe=metrics.observe_redis)
    await shared.start()
    stack.push_async_callback(shared.close)
    metrics.redis_up.set_function(lambda: 1.0 if shared.state == "up" else 0.0)
    feed = InvalidationFeed(config.redis)
    stack.push_async_callback(feed.close)
    return TieredCache(local, shared, feed)
