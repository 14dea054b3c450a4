from __future__ import annotations

import math

import pytest
from loadtest.loadgen.record import Record
from loadtest.loadgen.runner import RunResult
from loadtest.loadgen.stats import distribution, summarize, timeline

EXPECTED = {"stream": frozenset({"OK"}), "cancel": frozenset({"OK", "CANCELLED"})}


def record(
    index: int, cls: str, start: float, messages: list[tuple[float, int]], end: float, code: str
) -> Record:
    """A finished record; `messages`: (arrival, tokens) of each message with tokens."""
    r = Record(index, cls, start)
    for t, n in messages:
        r.token(t, n)
    r.finish(end, code)
    return r


def run(*records: Record, duration: float = 4.0) -> RunResult:
    return RunResult(list(records), duration, [], 0.0, cpu_seconds=1.0)


def test_percentiles_are_observed_values_by_nearest_rank() -> None:
    d = distribution(float(v) for v in range(1, 101))
    assert (d.count, d.p50, d.p90, d.p99, d.max, d.mean) == (100, 50.0, 90.0, 99.0, 100.0, 50.5)
    assert distribution([0.25]).p99 == 0.25
    empty = distribution([])
    assert empty.count == 0 and math.isnan(empty.p50)


def test_a_summary_counts_tokens_gaps_merges_and_the_unexpected_codes() -> None:
    ok = record(0, "stream", 0.0, [(0.1, 1), (0.12, 2), (0.15, 1)], 0.16, "OK")
    cancelled = record(1, "cancel", 0.5, [(0.7, 1)], 0.8, "CANCELLED")
    failed = record(2, "stream", 1.0, [], 1.5, "UNAVAILABLE")
    s = summarize(run(ok, cancelled, failed), EXPECTED)
    assert (s.requests, s.tokens, s.merged_messages) == (3, 5, 1)
    assert s.tokens_per_s == pytest.approx(5 / 4.0)
    assert s.requests_per_s == pytest.approx(3 / 4.0)
    assert s.ttft.count == 2 and s.ttft.max == pytest.approx(0.2)
    assert s.itl.count == 2 and s.itl.p50 == pytest.approx(0.02)
    assert s.itl.max == pytest.approx(0.03)
    assert s.latency.count == 1 and s.latency.p50 == pytest.approx(0.16)
    # After its first message, the stream read 3 tokens in 0.05 s.
    assert s.stream_tokens_per_s.p50 == pytest.approx(60.0)
    assert s.codes == {"OK": 1, "CANCELLED": 1, "UNAVAILABLE": 1}
    assert s.unexpected == {"UNAVAILABLE": 1}
    assert s.classes["stream"].unexpected == 1 and s.classes["cancel"].unexpected == 0
    assert s.generator_cpu == pytest.approx(0.25)


def test_a_class_without_expectations_expects_ok() -> None:
    s = summarize(run(record(0, "other", 0.0, [], 0.1, "CANCELLED")), EXPECTED)
    assert s.unexpected == {"CANCELLED": 1}


def test_the_timeline_bins_tokens_calls_in_flight_and_errors_by_second() -> None:
    first = record(0, "stream", 0.2, [(0.4, 1), (1.2, 1), (1.3, 2)], 2.6, "OK")
    second = record(1, "stream", 1.1, [], 1.4, "UNAVAILABLE")
    t = timeline(run(first, second, duration=2.7), EXPECTED)
    assert t.seconds == [0.0, 1.0, 2.0]
    assert t.tokens_per_s == [1.0, 3.0, 0.0]
    assert t.in_flight == [1, 1, 1]  # at 0.5 s, 1.5 s (second ended at 1.4), 2.5 s
    assert t.ended_per_s == [0, 1, 1]
    assert t.errors_per_s == {"UNAVAILABLE": [0, 1, 0]}
