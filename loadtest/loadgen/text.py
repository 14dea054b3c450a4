"""The terminal's view of runs: a run's summary table, and two runs side by side with the
ratio of each number (`compare`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["comparison", "headline", "summary_table"]

# (label, path in the summary's JSON, scale, unit, lower is better)
_METRICS: tuple[tuple[str, tuple[str, ...], float, str, bool], ...] = (
    ("requests/s", ("requests_per_s",), 1.0, "", False),
    ("tokens/s", ("tokens_per_s",), 1.0, "", False),
    ("TTFT p50", ("ttft", "p50"), 1e3, "ms", True),
    ("TTFT p90", ("ttft", "p90"), 1e3, "ms", True),
    ("TTFT p99", ("ttft", "p99"), 1e3, "ms", True),
    ("ITL p50", ("itl", "p50"), 1e3, "ms", True),
    ("ITL p90", ("itl", "p90"), 1e3, "ms", True),
    ("ITL p99", ("itl", "p99"), 1e3, "ms", True),
    ("latency p50", ("latency", "p50"), 1e3, "ms", True),
    ("latency p99", ("latency", "p99"), 1e3, "ms", True),
    ("tokens/s per stream p50", ("stream_tokens_per_s", "p50"), 1.0, "", False),
    ("merged messages", ("merged_messages",), 1.0, "", True),
    ("generator lag p99", ("generator_lag", "p99"), 1e3, "ms", True),
    ("generator CPU", ("generator_cpu",), 100.0, "% of a core", True),
)


def _numbers(summary: Mapping[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(label, value, unit, lower is better) of every number a summary is compared by."""
    numbers = []
    for label, path, scale, unit, lower_is_better in _METRICS:
        node: Any = summary
        for key in path:  # a number an older run did not record: unknown
            node = node.get(key) if isinstance(node, Mapping) else None
        value = math.nan if node is None else float(node) * scale
        numbers.append((label, value, unit, lower_is_better))
    errors = float(sum(summary["unexpected"].values()))
    return [*numbers, ("errors", errors, "", True)]


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if not unit and value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f} {unit}" if unit else f"{value:,.1f}"


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def summary_table(summary: Mapping[str, Any]) -> str:
    """A run's numbers and its status codes (the `summary` of its JSON)."""
    rows = [["", "value"]]
    rows += [[label, _fmt(value, unit)] for label, value, unit, _ in _numbers(summary)]
    rows.append(
        ["status codes", ", ".join(f"{c} {n}" for c, n in sorted(summary["codes"].items()))]
    )
    return _grid(rows)


def headline(summary: Mapping[str, Any]) -> str:
    """One line: requests, errors and the main latencies."""
    n = {label: _fmt(value, unit) for label, value, unit, _ in _numbers(summary)}
    return (
        f"{summary['requests']} requests, {n['errors']} errors, {n['tokens/s']} tokens/s, "
        f"TTFT p50/p99 {n['TTFT p50']} / {n['TTFT p99']}, ITL p99 {n['ITL p99']}"
    )


def comparison(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """Each number of two runs' summaries and the ratio B/A, with which side is better."""
    rows = [["", "A", "B", "B/A", "better"]]
    for (label, va, unit, lower_is_better), (_, vb, _, _) in zip(
        _numbers(a), _numbers(b), strict=True
    ):
        known = not (math.isnan(va) or math.isnan(vb))
        ratio = vb / va if known and va else math.nan
        better = ""
        if known and va != vb:
            better = "B" if (vb < va) == lower_is_better else "A"
        rows.append([label, _fmt(va, unit), _fmt(vb, unit), _fmt(ratio, "x"), better])
    return _grid(rows)
