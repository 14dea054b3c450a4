from __future__ import annotations

import re

from loadtest.loadgen.record import Record
from loadtest.loadgen.report import Section, render, table
from loadtest.loadgen.runner import RunResult
from loadtest.loadgen.stats import summarize, timeline

EXPECTED = {"a": frozenset({"OK"})}


def run(*, failures: int) -> RunResult:
    records = []
    for i in range(20):
        r = Record(i, "a", i * 0.1)
        for k in range(5):
            r.token(i * 0.1 + 0.05 + 0.02 * k, 1)
        r.finish(i * 0.1 + 0.2, "INTERNAL" if i < failures else "OK")
        records.append(r)
    return RunResult(records, 2.5, [], 0.0, cpu_seconds=0.1)


def page(result: RunResult, sections: tuple[Section, ...] = ()) -> str:
    s, t = summarize(result, EXPECTED), timeline(result, EXPECTED)
    return render("<Run> & co", [("target", "gateway <x>")], result, s, t, sections)


def test_the_report_is_one_file_with_its_plots_inside() -> None:
    html = page(run(failures=2))
    images = re.findall(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)
    assert len(images) == 4  # TTFT, ITL, throughput, errors
    assert all(len(data) > 1000 for data in images)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing to fetch
    assert "&lt;Run&gt; &amp; co" in html and "gateway &lt;x&gt;" in html
    assert "<td>INTERNAL</td><td>2</td><td>yes</td>" in html


def test_a_run_without_errors_says_so_instead_of_plotting_nothing() -> None:
    html = page(run(failures=0), (Section("ghz", table(("a",), [("<b>",)])),))
    assert html.count("<img") == 3
    assert "<p>No errors.</p>" in html
    assert "<h2>ghz</h2><table><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;b&gt;" in html
