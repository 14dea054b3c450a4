from __future__ import annotations

from typing import Any

from loadtest.loadgen.record import Record
from loadtest.loadgen.runner import RunResult
from loadtest.loadgen.stats import summarize
from loadtest.loadgen.text import comparison, headline, summary_table


def summary(ttft: float, tokens: int, errors: int) -> dict[str, Any]:
    records = []
    for i in range(10):
        r = Record(i, "a", 0.0)
        for k in range(tokens):
            r.token(ttft + 0.02 * k, 1)
        r.finish(1.0, "UNAVAILABLE" if i < errors else "OK")
        records.append(r)
    result = RunResult(records, 2.0, [], 0.0, cpu_seconds=0.5)
    return summarize(result, {"a": frozenset({"OK"})}).to_json()


def row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(label + "  "))
    return line[len(label) :].split("  ")


def test_compare_gives_each_number_of_both_runs_their_ratio_and_the_better_side() -> None:
    a, b = summary(ttft=0.1, tokens=10, errors=0), summary(ttft=0.05, tokens=20, errors=2)
    table = comparison(a, b)
    ttft = [cell.strip() for cell in row(table, "TTFT p50") if cell.strip()]
    assert ttft == ["100.0 ms", "50.0 ms", "0.5 x", "B"]  # lower is better
    tokens = [cell.strip() for cell in row(table, "tokens/s") if cell.strip()]
    assert tokens == ["50", "100", "2.0 x", "B"]  # higher is better
    errors = [cell.strip() for cell in row(table, "errors") if cell.strip()]
    assert errors == ["0", "2", "-", "A"]  # no ratio to 0


def test_the_summary_table_and_headline_show_codes_and_errors() -> None:
    s = summary(ttft=0.1, tokens=5, errors=3)
    table = summary_table(s)
    assert "OK 7, UNAVAILABLE 3" in table
    assert [c.strip() for c in row(table, "errors") if c.strip()] == ["3"]
    assert headline(s).startswith("10 requests, 3 errors, 25 tokens/s, TTFT p50/p99 100.0 ms")
