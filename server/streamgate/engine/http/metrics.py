"""Prometheus metrics of one engine server: TGI's metric names plus the engine's own.

Every server owns its `CollectorRegistry` (never the process-global one), so several servers can
live in one process (tests) without sharing counts.

Metric names follow what TGI's router exports, which is what TGI dashboards query. TGI's exporter
writes counters without the `_total` suffix (`tgi_request_count`, `tgi_request_failure{err}`),
which prometheus_client's Counter always appends; those three are therefore exported by a small
collector with exactly TGI's sample names (typed `untyped`, as the text format has no way to call
a counter without `_total` a counter here). Gauges that mirror engine state (queue, batch, KV
blocks) are read from `engine.stats()` at scrape time instead of being pushed on every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from streamgate.engine.core.llm_engine import EngineStats

FailureKind = Literal["validation", "overloaded", "dropped", "generation", "incomplete"]
FAILURE_KINDS: tuple[FailureKind, ...] = (
    "validation",
    "overloaded",
    "dropped",
    "generation",
    "incomplete",
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _duration_buckets() -> list[float]:
    # TGI: 35 buckets in a geometric sequence from 0.0001 * 1.5.
    value, buckets = 0.0001, []
    for _ in range(35):
        value *= 1.5
        buckets.append(value)
    return buckets


def _linear_buckets(maximum: int) -> list[float]:
    # TGI: 100 equal steps up to the limit (max_input_tokens or max_total_tokens).
    return [maximum / 100 * (i + 1) for i in range(100)]


class _TgiCounters(Collector):
    """TGI's request counters, with TGI's sample names (no `_total`)."""

    def __init__(self) -> None:
        self.count = 0
        self.success = 0
        self.failure: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)

    def collect(self) -> Iterator[Metric]:
        for name, doc, samples in (
            ("tgi_request_count", "Total number of requests", [({}, self.count)]),
            ("tgi_request_success", "Number of successful requests", [({}, self.success)]),
            (
                "tgi_request_failure",
                "Number of failed requests",
                [({"err": k}, v) for k, v in self.failure.items()],
            ),
        ):
            metric = Metric(name, doc, "unknown")
            for labels, value in samples:
                metric.add_sample(name, labels, float(value))
            yield metric


class _EngineCollector(Collector):
    """Gauges and counters read from the engine at scrape time."""

    def __init__(
        self,
        stats: Callable[[], EngineStats],
        in_flight: Callable[[], int],
        max_batch_total_tokens: int,
        weight_bytes: int,
    ) -> None:
        self._stats = stats
        self._in_flight = in_flight
        self._max_batch_total_tokens = max_batch_total_tokens
        self._weight_bytes = weight_bytes

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield GaugeMetricFamily("tgi_queue_size", "Current queue size", value=s.waiting)
        yield GaugeMetricFamily("tgi_batch_current_size", "Current batch size", value=s.running)
        yield GaugeMetricFamily(
            "tgi_batch_current_max_tokens",
            "Maximum tokens for the current batch",
            value=s.batch_tokens,
        )
        yield GaugeMetricFamily(
            "tgi_batch_max_total_tokens",
            "Maximum amount of tokens in total.",
            value=self._max_batch_total_tokens,
        )
        blocks = GaugeMetricFamily(
            "streamgate_engine_kv_blocks", "Paged KV cache blocks by state", labels=["state"]
        )
        blocks.add_metric(["total"], s.kv_blocks_total)
        blocks.add_metric(["used"], s.kv_blocks_used)
        blocks.add_metric(["cached"], s.kv_blocks_cached)
        yield blocks
        for name, doc, value in (
            (
                "streamgate_engine_prefix_cache_hit_tokens",
                "Prompt tokens whose prefill was skipped thanks to the prefix cache",
                s.prefix_cache_hit_tokens_total,
            ),
            ("streamgate_engine_prompt_tokens", "Prompt tokens admitted", s.prompt_tokens_total),
            (
                "streamgate_engine_generated_tokens",
                "Tokens generated",
                s.generated_tokens_total,
            ),
            (
                "streamgate_engine_preemptions",
                "Sequences preempted for lack of KV blocks",
                s.preemptions_total,
            ),
            ("streamgate_engine_steps", "Engine steps run", s.steps_total),
            ("streamgate_engine_aborted", "Requests aborted before finishing", s.aborted_total),
        ):
            yield CounterMetricFamily(name, doc, value=value)  # exported as <name>_total
        yield GaugeMetricFamily(
            "streamgate_engine_running_sequences", "Sequences in the running batch", value=s.running
        )
        yield GaugeMetricFamily(
            "streamgate_engine_weight_bytes", "Bytes of model weights", value=self._weight_bytes
        )
        yield GaugeMetricFamily(
            "streamgate_engine_requests_in_flight",
            "Generate requests holding one of max_concurrent_requests slots",
            value=self._in_flight(),
        )


class ServerMetrics:
    """The metrics of one engine server; `render()` is the /metrics body."""

    def __init__(
        self,
        stats: Callable[[], EngineStats],
        in_flight: Callable[[], int],
        *,
        max_input_tokens: int,
        max_total_tokens: int,
        max_batch_total_tokens: int,
        weight_bytes: int,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = _TgiCounters()
        self.registry.register(self._counters)
        self.registry.register(
            _EngineCollector(stats, in_flight, max_batch_total_tokens, weight_bytes)
        )

        durations = _duration_buckets()

        def histogram(name: str, doc: str, buckets: list[float]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=self.registry)

        self.request_duration = histogram(
            "tgi_request_duration", "Total time spent processing the request", durations
        )
        self.request_validation_duration = histogram(
            "tgi_request_validation_duration", "Time spent validating the request", durations
        )
        self.request_queue_duration = histogram(
            "tgi_request_queue_duration", "Time spent in the queue per request", durations
        )
        self.request_inference_duration = histogram(
            "tgi_request_inference_duration", "Request inference duration", durations
        )
        self.request_mean_time_per_token_duration = histogram(
            "tgi_request_mean_time_per_token_duration",
            "Mean time per token per request",
            durations,
        )
        self.request_input_length = histogram(
            "tgi_request_input_length",
            "Input token length per request",
            _linear_buckets(max_input_tokens),
        )
        self.request_max_new_tokens = histogram(
            "tgi_request_max_new_tokens",
            "Maximum new tokens per request",
            _linear_buckets(max_total_tokens),
        )
        self.request_generated_tokens = histogram(
            "tgi_request_generated_tokens",
            "Generated tokens per request",
            _linear_buckets(max_total_tokens),
        )

    def request_received(self) -> None:
        """A generate request arrived (TGI counts it before any check)."""
        self._counters.count += 1

    def request_failed(self, kind: FailureKind) -> None:
        """A generate request ended without its last token delivered."""
        self._counters.failure[kind] = self._counters.failure.get(kind, 0) + 1

    def request_validated(self, input_length: int, max_new_tokens: int, seconds: float) -> None:
        """A request passed validation and is about to be queued."""
        self.request_input_length.observe(input_length)
        self.request_max_new_tokens.observe(max_new_tokens)
        self.request_validation_duration.observe(seconds)

    def request_succeeded(
        self,
        *,
        total: float,
        queue: float,
        inference: float,
        generated_tokens: int,
    ) -> None:
        """A request produced its last token."""
        self._counters.success += 1
        self.request_duration.observe(total)
        self.request_queue_duration.observe(queue)
        self.request_inference_duration.observe(inference)
        self.request_mean_time_per_token_duration.observe(inference / max(generated_tokens, 1))
        self.request_generated_tokens.observe(generated_tokens)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric of this server."""
        return generate_latest(self.registry)
