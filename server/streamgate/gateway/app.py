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
import re
import signal
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from streamgate.admission import AdmissionQueue
from streamgate.api.v1 import generation_pb2 as pb
from streamgate.api.v1 import generation_pb2_grpc as pb_grpc
from streamgate.backends import TGIBackend
from streamgate.config import (
    EMBEDDED_BACKEND,
    BackendConfig,
    ConditionConfig,
    ConfigError,
    GatewayConfig,
    PoolConfig,
    RouteConfig,
    RuleConfig,
)
from streamgate.gateway.calls import ActiveCall, CallRegistry
from streamgate.gateway.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate, TemplateSyntaxError
from streamgate.gateway.embedded import EmbeddedEngine
from streamgate.gateway.errors import GatewayError, Reason
from streamgate.gateway.health import HealthMonitor, HealthPolicy
from streamgate.gateway.load import LoadMonitor
from streamgate.gateway.reflection import enable_reflection
from streamgate.gateway.server import create_server, listen
from streamgate.gateway.service import GenerationService, ServiceSettings
from streamgate.gateway.shadow import ShadowSender
from streamgate.routing import (
    AllOf,
    AnyOf,
    CircuitBreaker,
    Condition,
    FieldTest,
    LeastLoad,
    Picker,
    Pool,
    PowerOfTwo,
    PrefixAffinity,
    PrefixIndex,
    Replica,
    RoundRobin,
    Route,
    Router,
    RouteTable,
    Rule,
    Target,
)
from streamgate.telemetry.logging import configure_logging, get_logger
from streamgate.telemetry.metrics import GatewayMetrics, MetricsServer
from streamgate.tenancy import Tenancy

__all__ = ["GENERATION_SERVICE", "HEALTH_SERVICE", "RunningGateway", "serve", "start_gateway"]

log = get_logger(__name__)

GENERATION_SERVICE: str = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
# After the grace period, interrupted calls get this long to send their status.
_INTERRUPT_WAIT_SECONDS = 5.0


@dataclass
class RunningGateway:
    """A started gateway: its addresses, and its parts for shutdown."""

    address: str
    """`host:port` of the gRPC server."""
    metrics_url: str | None
    routes: RouteTable
    config: GatewayConfig
    _server: grpc.aio.Server
    _calls: CallRegistry
    _monitor: HealthMonitor
    _stack: AsyncExitStack
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _shutdown: asyncio.Task[None] | None = None

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
    templates = _templates(config)
    tenancy = Tenancy.from_config(config)
    backends = list(config.backends)
    if config.uses_embedded_engine:
        engine = EmbeddedEngine(config.embedded)
        url = await engine.start()
        stack.push_async_callback(engine.stop)
        backends = [BackendConfig(name=EMBEDDED_BACKEND, url=url)]
    replicas = {b.name: _replica(b) for b in backends}
    for replica in replicas.values():
        await replica.backend.start()
        stack.push_async_callback(replica.backend.close)
    pools = {p.name: _pool(p, replicas) for p in config.effective_pools()}
    routes = RouteTable(
        [
            Route(
                name=r.name,
                target=_target(r, pools, own=r.name if r.backends is not None else None),
                default_max_new_tokens=r.max_new_tokens,
            )
            for r in config.effective_routes()
        ],
        default=config.effective_default_route(),
    )
    router = Router([Rule(r.name, _condition(r.when), _target(r, pools)) for r in config.rules])

    metrics = GatewayMetrics()
    metrics_url: str | None = None
    if config.metrics.enabled:
        metrics_server = MetricsServer(metrics, config.metrics.host, config.metrics.port)
        metrics_url = await metrics_server.start()
        stack.push_async_callback(metrics_server.stop)

    health_servicer = health.aio.HealthServicer()

    def rejoined(replica: Replica) -> None:
        for pool in pools.values():
            pool.forget(replica)

    monitor = HealthMonitor(
        list(replicas.values()),
        health_servicer,
        [GENERATION_SERVICE],
        metrics,
        [HealthPolicy(b.health_interval_seconds, b.health_rise, b.health_fall) for b in backends],
        on_rejoin=rejoined,
    )
    stack.push_async_callback(monitor.stop)
    await monitor.check_all()
    # One interval for all: the smallest configured (each scrape is one small GET).
    interval = min(b.load_interval_seconds for b in backends)
    load = LoadMonitor(list(replicas.values()), interval, metrics)
    stack.push_async_callback(load.stop)
    if not monitor.serving:
        log.warning("no backend is healthy yet", backends=[b.name for b in backends])

    calls = CallRegistry()
    shadow = ShadowSender(metrics)
    stack.push_async_callback(shadow.stop)
    admission = config.admission
    queue = AdmissionQueue(
        admission.max_active_streams, admission.max_queued, admission.max_queue_wait_seconds
    )
    metrics.watch_queue(lambda: queue.queued, lambda: queue.active)
    service = GenerationService(
        routes,
        templates,
        ServiceSettings.from_config(config),
        calls,
        tenancy,
        queue,
        router,
        shadow,
        metrics,
        on_backend_failure=monitor.check_soon,
    )
    server = create_server(config.listen)
    pb_grpc.add_GenerationServiceServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, [GENERATION_SERVICE, HEALTH_SERVICE])
    address = listen(server, config.listen)
    await server.start()
    stack.push_async_callback(server.stop, None)
    monitor.start()
    load.start()
    log.info(
        "gateway started",
        address=address,
        routes={r.name: [x.name for x in r.replicas] for r in routes},
        metrics=metrics_url,
    )
    return RunningGateway(
        address=address,
        metrics_url=metrics_url,
        routes=routes,
        config=config,
        _server=server,
        _calls=calls,
        _monitor=monitor,
        _stack=stack,
    )


def _replica(b: BackendConfig) -> Replica:
    backend = TGIBackend(
        b.url,
        name=b.name,
        max_connections=b.max_connections,
        connect_timeout=b.connect_timeout_seconds,
        idle_timeout=b.idle_timeout_seconds,
        request_timeout=b.request_timeout_seconds,
        health_timeout=b.health_timeout_seconds,
    )
    # supports_tokenize False: never asked (None: probed by the first health check).
    tokenize = None if b.count_prompt_tokens else False
    c = b.circuit
    return Replica(
        name=b.name,
        backend=backend,
        model_label=b.model,
        supports_tokenize=tokenize,
        circuit=CircuitBreaker(c.failures, c.open_seconds, c.max_open_seconds),
    )


def _pool(p: PoolConfig, replicas: Mapping[str, Replica]) -> Pool:
    picker: Picker
    if p.picker == "prefix_affinity":
        picker = PrefixAffinity(
            PrefixIndex(p.prefix.max_blocks_per_replica),
            balance_abs=p.prefix.balance_abs,
            balance_rel=p.prefix.balance_rel,
            min_match=p.prefix.min_match,
        )
    elif p.picker == "round_robin":
        picker = RoundRobin()
    elif p.picker == "least_load":
        picker = LeastLoad()
    else:
        picker = PowerOfTwo()
    return Pool(
        name=p.name,
        replicas=tuple(replicas[name] for name in p.backends),
        picker=picker,
        block_bytes=p.prefix.block_bytes,
        max_blocks=p.prefix.max_blocks,
    )


def _target(
    t: RouteConfig | RuleConfig, pools: Mapping[str, Pool], own: str | None = None
) -> Target:
    """A route's or rule's target; `own`: the route lists its backends (its pool has its name)."""
    if t.split is not None:
        arms = tuple((pools[arm.pool], arm.weight) for arm in t.split)
    else:
        arms = ((pools[own or t.pool or ""], 1.0),)
    return Target(
        arms=arms,
        fallback=pools[t.fallback] if t.fallback else None,
        shadow=pools[t.shadow] if t.shadow else None,
    )


def _condition(c: ConditionConfig) -> Condition:
    if c.all is not None:
        return AllOf(tuple(_condition(p) for p in c.all))
    if c.any is not None:
        return AnyOf(tuple(_condition(p) for p in c.any))
    return FieldTest(
        field=(c.field or "").lower(),
        equals=c.equals,
        one_of=frozenset(c.in_) if c.in_ is not None else None,
        prefix=c.prefix,
        pattern=re.compile(c.regex) if c.regex is not None else None,
        exists=c.exists,
    )


def _templates(config: GatewayConfig) -> Mapping[str, ChatTemplate]:
    """Compile every route's chat template now: a broken one is a configuration error."""
    configured = {r.name: i for i, r in enumerate(config.routes)}
    out: dict[str, ChatTemplate] = {}
    problems: list[str] = []
    for route in config.effective_routes():
        try:
            out[route.name] = ChatTemplate(
                route.template_text() or DEFAULT_CHAT_TEMPLATE,
                bos_token=route.bos_token,
                eos_token=route.eos_token,
            )
        except TemplateSyntaxError as err:
            where = f"routes[{configured.get(route.name, 0)}]"
            key = "chat_template_file" if route.chat_template_file else "chat_template"
            problems.append(f"  {where}.{key}: {err}")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))
    return out


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut it down gracefully.

    Configures logging, starts everything (the embedded engine too when no backends are
    configured), prints `streamgate listening on HOST:PORT (routes: ...)` on stdout once calls
    are accepted, and returns after a clean shutdown. A second signal cuts the grace period
    short. Raises ConfigError, EmbeddedEngineError or OSError when it cannot start.
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

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
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
        for sig in signals:
            loop.remove_signal_handler(sig)
