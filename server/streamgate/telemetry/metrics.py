"""Prometheus metrics of the gateway, in their own registry, served over HTTP.

Names (all prefixed `streamgate_`): requests by method and code, time to first token and
inter-token latency histograms, end-to-end duration, gateway overhead, tokens in and out,
active streams, backend errors by kind, backend health, retries, merged events.
"""

from __future__ import annotations

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

__all__ = ["GatewayMetrics", "MetricsServer"]

# Latencies from sub-millisecond (gateway overhead, token gaps of a fast backend) to minutes.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip
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
        self.retries = Counter(
            "streamgate_retries", "Requests retried on another backend", ["route"], registry=r
        )
        self.merged_events = Counter(
            "streamgate_merged_events",
            "Backend events merged into a Delta with others because the client read slower",
            registry=r,
        )

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
