"""One load-generator run from plan to files: plan the requests, drive the target while
showing progress, sum up, and write `<name>.json` and `<name>.html`.

The CLI (`python -m loadtest.loadgen run`) and the other tools (`python -m loadtest`, the
soak, the capacity measurement) all run through `measure` and `write`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.loadgen.mix import Mix
from loadtest.loadgen.plan import plan
from loadtest.loadgen.progress import show_progress
from loadtest.loadgen.record import Expected
from loadtest.loadgen.report import Section, render
from loadtest.loadgen.runner import Load, Progress, RunResult, run_load
from loadtest.loadgen.stats import Summary, Timeline, summarize, timeline
from loadtest.loadgen.targets import Target
from loadtest.stack import ROOT

__all__ = ["Outcome", "command", "machine", "measure", "write"]


@dataclass
class Outcome:
    """A finished run and what it adds up to."""

    target: str
    load: Load
    requests: int
    result: RunResult
    summary: Summary
    timeline: Timeline


async def measure(
    target: Target, mix: Mix, count: int, load: Load, title: str, *, seed: int = 1
) -> Outcome:
    """Send `count` requests of `mix` to `target` as `load` says."""
    requests = plan(mix, count, seed)
    expected: Expected = {c.name: c.expected_codes() for c in mix.classes}
    progress = Progress(planned=len(requests), expected=expected)
    async with show_progress(progress, title):
        result = await run_load(target, requests, load, progress)
    return Outcome(
        target.name,
        load,
        count,
        result,
        summarize(result, expected),
        timeline(result, expected),
    )


def machine() -> str:
    """The machine a run was on, for reports: CPUs, load average, Python."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, load average {load} (shared machine); "
        f"Python {platform.python_version()}"
    )


def command() -> str:
    """This process's command line, as it was typed (`python -m loadtest.soak ...`)."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT) and script.suffix == ".py":
        parts = script.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__main__" else parts)
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return shlex.join(sys.argv)


def write(
    outcome: Outcome,
    out: Path,
    name: str,
    title: str,
    facts: Sequence[tuple[str, str]],
    sections: Sequence[Section] = (),
) -> tuple[Path, Path]:
    """Write `out/<name>.json` (the summary, the timeline, one row a request) and
    `out/<name>.html` (the report); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    all_facts = [
        ("target", outcome.target),
        ("load", outcome.load.describe()),
        ("requests", f"{outcome.requests:,}"),
        *facts,
        ("started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(outcome.result.started_at))),
        ("machine", machine()),
        ("command", command()),
    ]
    document = {
        "title": title,
        "facts": dict(all_facts),
        "summary": outcome.summary.to_json(),
        "timeline": outcome.timeline.to_json(),
        "requests": [r.row() for r in outcome.result.records],
    }
    data_path, html_path = out / f"{name}.json", out / f"{name}.html"
    data_path.write_text(json.dumps(document, indent=1))
    page = render(title, all_facts, outcome.result, outcome.summary, outcome.timeline, sections)
    html_path.write_text(page)
    return data_path, html_path
