"""Prometheus metrics of the gateway, in their own registry, served over HTTP.

Names (all prefixed `streamgate_`): requests by method and code, time to first token and
inter-token latency histograms, end-to-end duration, gateway overhead, tokens in and out,
active streams, backend errors by kind, backend health, retries, merged events; per tenant:
requests, tokens, rejections by reason, remaining quota; the admission queue's length, active
upstream streams and wait time; the cache's outcomes, size and evictions per tier, and the
shared tier's state, operation latency and errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = ["GatewayMetrics", "MetricsServer", "QuotaLeft"]


class QuotaLeft(Protocol):
    """What is left of a quota (admission.QuotaRemaining)."""

    @property
    def requests(self) -> int | None: ...
    @property
    def tokens(self) -> int | None: ...
    @property
    def streams(self) -> int | None: ...


# Latencies from sub-millisecond (gateway overhead, token gaps of a fast backend) to minutes.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    """Every metric the gateway records (one instance, created by the composition root)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU, open fds
        self.requests = Counter(
            "streamgate_requests", "Finished calls by method and gRPC status code",
            ["method", "code"], registry=r,
        )  # fmt: skip
        self.time_to_first_token = Histogram(
            "streamgate_time_to_first_token_seconds",
            "From the start of a GenerateStream call to its first token handed to gRPC",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inter_token = Histogram(
            "streamgate_inter_token_seconds",
            "Time between two consecutive tokens arriving from the backend",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "streamgate_request_duration_seconds", "End-to-end duration of calls",
            ["method", "route"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "streamgate_gateway_overhead_seconds",
            "Call duration minus the time spent waiting on the backend",
            ["method"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "streamgate_tokens", "Prompt (in) and generated (out) tokens",
            ["direction", "route"], registry=r,
        )  # fmt: skip
        self.active_streams = Gauge(
            "streamgate_active_streams", "Generation calls in progress", registry=r
        )
        self.backend_errors = Counter(
            "streamgate_backend_errors", "Backend failures by backend and kind",
            ["backend", "kind"], registry=r,
        )  # fmt: skip
        self.backend_healthy = Gauge(
            "streamgate_backend_healthy", "1 if the backend's last health check passed",
            ["backend"], registry=r,
        )  # fmt: skip
        self.backend_load = Gauge(
            "streamgate_backend_load",
            "Requests on the backend as its /metrics reports them (queue + running batch)",
            ["backend"], registry=r,
        )  # fmt: skip
        self.ejections = Counter(
            "streamgate_backend_ejections", "Times a backend's circuit opened (passive ejection)",
            ["backend"], registry=r,
        )  # fmt: skip
        self.shadow_requests = Counter(
            "streamgate_shadow_requests",
            "Copies sent to shadow pools, by result (ok, a backend error kind, dropped, "
            "no_backend)", ["pool", "result"], registry=r,
        )  # fmt: skip
        self.shadow_time_to_first_token = Histogram(
            "streamgate_shadow_time_to_first_token_seconds", "Shadow copies' time to first token",
            ["pool"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_duration = Histogram(
            "streamgate_shadow_duration_seconds", "Shadow copies' duration",
            ["pool"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.rule_matches = Counter(
            "streamgate_routed", "Requests by route, rule (empty: the route's own target) and pool",
            ["route", "rule", "pool"], registry=r,
        )  # fmt: skip
        self.cache_requests = Counter(
            "streamgate_cache_requests",
            "Cache outcomes of generation calls (hit, miss, bypass, store_skipped) by tier",
            ["result", "tier"], registry=r,
        )  # fmt: skip
        self.cache_entries = Gauge(
            "streamgate_cache_entries", "Entries in the cache", ["tier"], registry=r
        )
        self.cache_bytes = Gauge(
            "streamgate_cache_bytes", "Estimated bytes of the cache's entries", ["tier"], registry=r
        )
        self.cache_evictions = Counter(
            "streamgate_cache_evictions", "Entries dropped to make room", ["tier"], registry=r
        )
        self.redis_seconds = Histogram(
            "streamgate_cache_redis_seconds", "Duration of the shared tier's operations",
            ["op"], buckets=_REDIS_BUCKETS, registry=r,
        )  # fmt: skip
        self.redis_errors = Counter(
            "streamgate_cache_redis_errors",
            "Failed or timed-out operations of the shared tier, and unreadable entries (decode)",
            ["op"], registry=r,
        )  # fmt: skip
        self.redis_up = Gauge(
            "streamgate_cache_redis_up", "1 while the shared tier is in use, 0 while it is down",
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "streamgate_retries", "Requests retried on another backend", ["route"], registry=r
        )
        self.merged_events = Counter(
            "streamgate_merged_events",
            "Backend events merged into a Delta with others because the client read slower",
            registry=r,
        )
        self.tenant_requests = Counter(
            "streamgate_tenant_requests", "Finished generation calls by tenant and status code",
            ["tenant", "code"], registry=r,
        )  # fmt: skip
        self.tenant_tokens = Counter(
            "streamgate_tenant_tokens", "Prompt (in) and generated (out) tokens by tenant",
            ["tenant", "direction"], registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "streamgate_rejections",
            "Calls refused by authentication, authorization, quotas or the admission queue",
            ["tenant", "reason"], registry=r,
        )  # fmt: skip
        self.quota_remaining = Gauge(
            "streamgate_quota_remaining",
            "What is left of a tenant's limits (requests, tokens per minute; streams) after its "
            "latest call", ["tenant", "kind"], registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "streamgate_queue_wait_seconds", "Time admitted calls waited for an upstream slot",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_length = Gauge(
            "streamgate_queue_length", "Calls waiting for an upstream slot", registry=r
        )
        self.upstream_streams = Gauge(
            "streamgate_upstream_streams", "Admitted calls holding an upstream slot", registry=r
        )

    def watch_queue(self, queued: Callable[[], float], active: Callable[[], float]) -> None:
        """Read the queue's length and active slots at every scrape."""
        self.queue_length.set_function(queued)
        self.upstream_streams.set_function(active)

    def observe_redis(self, op: str, seconds: float | None) -> None:
        """One operation of the shared tier: its duration, or None when it failed."""
        if seconds is None:
            self.redis_errors.labels(op).inc()
        else:
            self.redis_seconds.labels(op).observe(seconds)

    def record_quota(self, tenant: str, left: QuotaLeft) -> None:
        """What is left of `tenant`'s limits (limits it does not have are not shown)."""
        for kind, value in (
            ("requests", left.requests),
            ("tokens", left.tokens),
            ("streams", left.streams),
        ):
            if value is not None:
                self.quota_remaining.labels(tenant, kind).set(value)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsServer:
    """`GET /metrics` over HTTP (aiohttp, on the gateway's event loop)."""

    def __init__(self, metrics: GatewayMetrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen; returns the metrics URL (with the real port when 0 was asked)."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
