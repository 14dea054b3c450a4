"""The HTML report of a run: one self-contained file (plots are PNGs inside it), readable
without the code: what ran, the numbers, the plots, and what each term means."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtest.loadgen.runner import RunResult
from loadtest.loadgen.stats import Distribution, Summary, Timeline

__all__ = ["Section", "image", "ms", "new_figure", "render", "table"]


@dataclass(frozen=True)
class Section:
    """A part of the report a caller adds (a verdict, ghz's results): a title and HTML."""

    title: str
    body: str


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    """An HTML table (without a header row when `headers` is None); cells are escaped."""
    head = ""
    if headers is not None:
        head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        head += "</tr></thead>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a table ("-" when there is no value)."""
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:,.1f} ms"


def render(
    title: str,
    facts: Sequence[tuple[str, str]],
    result: RunResult,
    summary: Summary,
    timeline: Timeline,
    sections: Sequence[Section] = (),
) -> str:
    """The whole report. `facts`: what ran (target, backend, load, mix, command, machine)."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="facts">{table(None, facts)}</div>',
        *(f"<h2>{html.escape(s.title)}</h2>{s.body}" for s in sections),
        "<h2>Summary</h2>",
        _summary_table(summary),
        "<h2>By request class</h2>",
        _classes_table(summary),
        "<h2>Time to first token</h2>",
        image(_histogram([r.ttft for r in result.records if r.ttft is not None], "TTFT")),
        "<h2>Inter-token latency</h2>",
        image(_histogram([g for r in result.records for g in r.gaps], "inter-token gap")),
        "<h2>Throughput and streams in flight over time</h2>",
        image(_throughput(timeline)),
        "<h2>Errors over time</h2>",
        image(_errors(timeline)) if timeline.errors_per_s else "<p>No errors.</p>",
        "<h2>How to read this report</h2>",
        _GLOSSARY,
    ]
    return _PAGE.format(title=html.escape(title), body="\n".join(parts))


def _row(name: str, d: Distribution, unit: str = "ms") -> list[object]:
    if unit == "ms":
        return [name, d.count, ms(d.p50), ms(d.p90), ms(d.p99), ms(d.mean), ms(d.max)]
    values = (d.p50, d.p90, d.p99, d.mean, d.max)
    return [name, d.count, *(f"{v:,.1f}" if not math.isnan(v) else "-" for v in values)]


def _summary_table(s: Summary) -> str:
    totals = table(
        (
            "requests",
            "duration",
            "requests/s",
            "tokens",
            "tokens/s",
            "merged messages",
            "load generator CPU",
        ),
        [
            (
                s.requests,
                f"{s.duration_s:,.1f} s",
                f"{s.requests_per_s:,.1f}",
                f"{s.tokens:,}",
                f"{s.tokens_per_s:,.0f}",
                s.merged_messages,
                f"{s.generator_cpu:.0%} of a core",
            )
        ],
    )
    rows = [
        _row("time to first token", s.ttft),
        _row("inter-token gap", s.itl),
        _row("request latency (OK calls)", s.latency),
        _row("tokens/s per stream", s.stream_tokens_per_s, unit="tokens/s"),
    ]
    if s.generator_lag.count:
        rows.append(_row("load generator lag (open loop)", s.generator_lag))
    distributions = table(("", "samples", "p50", "p90", "p99", "mean", "max"), rows)
    codes = table(
        ("status", "calls", "error?"),
        [(code, n, "yes" if code in s.unexpected else "") for code, n in sorted(s.codes.items())],
    )
    return totals + distributions + "<h3>Status codes</h3>" + codes


def _classes_table(s: Summary) -> str:
    rows = [
        (
            name,
            c.requests,
            ", ".join(f"{code} {n}" for code, n in sorted(c.codes.items())),
            c.unexpected,
            ms(c.ttft_p50),
            ms(c.ttft_p99),
        )
        for name, c in s.classes.items()
    ]
    return table(("class", "requests", "status codes", "errors", "TTFT p50", "TTFT p99"), rows)


def new_figure(height: float = 3.5) -> tuple[Figure, Axes]:
    """A new figure the width of the page, and its axes. (Figures made without pyplot: no
    display is needed, and nothing global keeps them.)"""
    made = Figure(figsize=(9, height))
    return made, made.subplots()


def image(figure: Figure) -> str:
    """`figure` as an <img> with the PNG inside."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _histogram(seconds: list[float], what: str) -> Figure:
    made, axis = new_figure()
    values = np.array(seconds, dtype=float) * 1e3
    if values.size:
        low = float(values.min())
        top = float(np.percentile(values, 99.9))  # a few stragglers must not squash the rest
        span = (low, max(top, low + 1.0))  # at least 1 ms wide: equal values make one bar
        axis.hist(np.clip(values, None, top), bins=80, range=span, color="#4878a8")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            v = float(np.percentile(values, q, method="inverted_cdf"))
            axis.axvline(v, color="#c03030", linestyle=style, label=f"p{q} {v:,.1f} ms")
        axis.legend()
    axis.set_xlabel(f"{what} (ms; the last bar holds everything above p99.9)")
    axis.set_ylabel("count")
    return made


def _throughput(t: Timeline) -> Figure:
    made, axis = new_figure()
    axis.plot(t.seconds, t.tokens_per_s, color="#4878a8", label="tokens/s received")
    axis.set_xlabel("seconds since the start")
    axis.set_ylabel("tokens/s", color="#4878a8")
    flight = axis.twinx()
    flight.plot(t.seconds, t.in_flight, color="#e08030", label="calls in flight")
    flight.set_ylabel("calls in flight", color="#e08030")
    return made


def _errors(t: Timeline) -> Figure:
    made, axis = new_figure(3)
    bottom = np.zeros(len(t.seconds))
    for code, counts in t.errors_per_s.items():
        axis.bar(t.seconds, counts, width=1.0, align="edge", bottom=bottom, label=code)
        bottom += np.array(counts)
    axis.set_xlabel("seconds since the start")
    axis.set_ylabel("errors per second")
    axis.legend()
    return made


_GLOSSARY = """
<dl>
<dt>Time to first token (TTFT)</dt><dd>From sending the request to receiving the first
message with a token: what a user waits before text starts to appear.</dd>
<dt>Inter-token gap (ITL)</dt><dd>Time between two consecutive messages with tokens of one
stream. With a backend at 20 ms per token it should stay near 20 ms; more means the
gateway or the client fell behind.</dd>
<dt>Tokens/s per stream</dt><dd>One stream's reading speed after its first token.
Tokens/s (the total) counts every token received, over the whole run. Answers served from
the gateway's response cache arrive at once: they show as a TTFT and gaps near 0 and a very
high rate per stream.</dd>
<dt>Merged messages</dt><dd>Messages that carried more than one token: the gateway merges
pending steps only when a client reads slower than tokens arrive. 0 means every step
reached the client as its own message.</dd>
<dt>Errors</dt><dd>Calls that ended with a status their request class did not expect
(a class that cancels its calls expects CANCELLED, one with short deadlines
DEADLINE_EXCEEDED). NO_END: a stream that stopped without its End message.</dd>
<dt>Load generator lag</dt><dd>Open loop only: how late requests started compared with
their scheduled (Poisson) arrival. Near 0 means the load was the one asked for; large values
mean this client, not the server, limited the rate.</dd>
<dt>Load generator CPU</dt><dd>The CPU time the load generator used per second of the
run. Near 100% of a core, this Python client may be what limits the load (its event loop runs
on one core).</dd>
<dt>Percentiles</dt><dd>p99 = 99% of the samples were at or below this value (nearest
rank: always an observed value).</dd>
</dl>
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child, .facts td {{ text-align: left; }}
thead {{ background: #f0f0f0; }}
img {{ max-width: 100%; }}
dt {{ font-weight: bold; margin-top: 0.5em; }}
.pass {{ color: #207020; font-weight: bold; }} .fail {{ color: #b02020; font-weight: bold; }}
</style></head>
<body>
{body}
</body></html>
"""
