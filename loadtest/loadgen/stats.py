"""What a run's records add up to: latency distributions, throughput, status codes, and the
same over time (one-second bins) for the report's plots."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.loadgen.record import Expected, Record, is_expected
from loadtest.loadgen.runner import RunResult

__all__ = ["Distribution", "Summary", "Timeline", "distribution", "summarize", "timeline"]


@dataclass(frozen=True)
class Distribution:
    """Percentiles of a set of values (seconds, or tokens/s); NaN when there are none."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float


def distribution(values: Iterable[float]) -> Distribution:
    data = np.fromiter(values, dtype=float)
    if not data.size:
        nan = math.nan
        return Distribution(0, nan, nan, nan, nan, nan)
    # Nearest rank: every percentile is a value that was observed.
    p50, p90, p99 = np.percentile(data, [50, 90, 99], method="inverted_cdf")
    return Distribution(
        int(data.size), float(p50), float(p90), float(p99), float(data.mean()), float(data.max())
    )


@dataclass(frozen=True)
class ClassSummary:
    """One request class's share of a run."""

    requests: int
    codes: dict[str, int]
    unexpected: int
    ttft_p50: float
    ttft_p99: float


@dataclass(frozen=True)
class Summary:
    """A run in numbers: what `compare` compares and the report's table shows."""

    requests: int
    duration_s: float
    requests_per_s: float
    """Calls that ended per second of the run."""
    tokens: int
    tokens_per_s: float
    """Tokens received per second of the run, over all streams."""
    ttft: Distribution
    """Time to first token, of the calls that got one."""
    itl: Distribution
    """Time between consecutive token-carrying messages (inter-token latency)."""
    latency: Distribution
    """Send to end of the calls that ended OK."""
    stream_tokens_per_s: Distribution
    """Per stream that ended OK with two or more messages: tokens after the first message
    divided by the time from the first message to the last."""
    merged_messages: int
    """Messages that carried more than one token (the gateway merged steps for a slow reader)."""
    codes: dict[str, int]
    """Status codes of all calls."""
    unexpected: dict[str, int]
    """Codes no class expected (the errors), by code."""
    generator_lag: Distribution
    """Open loop: start minus scheduled start (the generator's own delay)."""
    generator_cpu: float
    """The load generator's CPU time per second of the run (1.0: one core busy throughout)."""
    classes: dict[str, ClassSummary]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def summarize(result: RunResult, expected: Expected) -> Summary:
    """The summary of `result`, judged by the codes each class may end with."""
    records = result.records
    duration = max(result.duration, 1e-9)
    tokens = sum(r.tokens for r in records)
    ok = [r for r in records if r.code == "OK"]
    classes: dict[str, ClassSummary] = {}
    for name in sorted({r.request_class for r in records}):
        mine = [r for r in records if r.request_class == name]
        ttft = distribution(r.ttft for r in mine if r.ttft is not None)
        classes[name] = ClassSummary(
            requests=len(mine),
            codes=dict(Counter(r.code for r in mine)),
            unexpected=sum(1 for r in mine if not is_expected(r, expected)),
            ttft_p50=ttft.p50,
            ttft_p99=ttft.p99,
        )
    return Summary(
        requests=len(records),
        duration_s=result.duration,
        requests_per_s=sum(1 for r in records if r.end is not None) / duration,
        tokens=tokens,
        tokens_per_s=tokens / duration,
        ttft=distribution(r.ttft for r in records if r.ttft is not None),
        itl=distribution(g for r in records for g in r.gaps),
        latency=distribution(r.end - r.start for r in ok if r.end is not None),
        stream_tokens_per_s=distribution(_decode_rate(r) for r in ok if len(r.arrivals) > 1),
        merged_messages=sum(r.merged for r in records),
        codes=dict(Counter(r.code for r in records)),
        unexpected=dict(Counter(r.code for r in records if not is_expected(r, expected))),
        generator_lag=distribution(result.lags),
        generator_cpu=result.cpu_seconds / duration,
        classes=classes,
    )


def _decode_rate(record: Record) -> float:
    span = record.arrivals[-1] - record.arrivals[0]
    return (record.tokens - record.sizes[0]) / span if span > 0 else math.nan


@dataclass(frozen=True)
class Timeline:
    """The run in one-second bins (bin i covers [i, i+1) s after the start)."""

    seconds: list[float]
    tokens_per_s: list[float]
    in_flight: list[int]
    """Calls in flight at the middle of each bin."""
    ended_per_s: list[int]
    errors_per_s: dict[str, list[int]]
    """Calls that ended with an unexpected code, by code."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def timeline(result: RunResult, expected: Expected) -> Timeline:
    """Bin `result` by second; errors are the codes their class does not expect."""
    records = result.records
    bins = max(1, math.ceil(result.duration))
    edges = np.arange(bins + 1, dtype=float)
    arrivals = np.fromiter((t for r in records for t in r.arrivals), dtype=float)
    weights = np.fromiter((n for r in records for n in r.sizes), dtype=float)
    tokens, _ = np.histogram(arrivals, bins=edges, weights=weights)
    ends = [r.end for r in records if r.end is not None]
    ended, _ = np.histogram(np.array(ends, dtype=float), bins=edges)
    middles = edges[:-1] + 0.5
    starts = np.sort(np.fromiter((r.start for r in records), dtype=float))
    finishes = np.sort(np.array(ends, dtype=float))
    in_flight = np.searchsorted(starts, middles) - np.searchsorted(finishes, middles)
    errors: dict[str, list[int]] = {}
    failed = [r for r in records if r.end is not None and not is_expected(r, expected)]
    for code in sorted({r.code for r in failed}):
        times = np.array([r.end for r in failed if r.code == code], dtype=float)
        counts, _ = np.histogram(times, bins=edges)
        errors[code] = [int(c) for c in counts]
    return Timeline(
        seconds=[float(s) for s in edges[:-1]],
        tokens_per_s=[float(t) for t in tokens],
        in_flight=[int(n) for n in in_flight],
        ended_per_s=[int(n) for n in ended],
        errors_per_s=errors,
    )
