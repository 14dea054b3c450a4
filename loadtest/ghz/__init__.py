"""ghz against the gateway: the configs in this folder (ghz's JSON config format) run through
server reflection and through loadtest/streamgate.protoset (`python -m loadtest.ghz`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.loadgen.report import Section, table
from loadtest.stack import ROOT

__all__ = ["CONFIGS", "PROTOSET", "GhzRun", "describe", "run_all", "run_ghz", "section"]

CONFIGS = tuple(sorted(Path(__file__).resolve().parent.glob("*.json")))
PROTOSET = ROOT / "loadtest" / "streamgate.protoset"


@dataclass(frozen=True)
class GhzRun:
    """One ghz run, from its JSON output."""

    name: str
    calls: int
    """Calls ghz was asked to make (`total`)."""
    responses: int
    """Calls ghz reports (`count`)."""
    codes: dict[str, int]
    errors: dict[str, int]
    rps: float
    p50_ms: float
    p99_ms: float

    def problems(self) -> list[str]:
        """Why this run fails: any error, or fewer OK responses than calls."""
        problems = [f"{n} x {error}" for error, n in sorted(self.errors.items())]
        ok = self.codes.get("OK", 0)
        if self.responses < self.calls or ok < self.calls:
            problems.append(f"{ok} OK responses of {self.responses} for {self.calls} calls")
        return problems


def run_ghz(
    ghz: Path,
    config: Path,
    address: str,
    *,
    protoset: bool,
    env: Mapping[str, str],
    out: Path,
    extra: Sequence[str] = (),
) -> GhzRun:
    """Run ghz with `config` against `address` (through the protoset, or reflection); keep
    its JSON output in `out`. Raises RuntimeError when ghz itself fails."""
    via = "protoset" if protoset else "reflection"
    name = f"{config.stem} via {via}"
    args = [str(ghz), "--config", str(config), "--format", "json", *extra]
    if protoset:
        args += ["--protoset", str(PROTOSET)]
    done = subprocess.run(
        [*args, address], env=dict(env), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ghz failed on {name} (exit {done.returncode}): {done.stderr.strip()}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{config.stem}-{via}.json").write_text(done.stdout)
    report = json.loads(done.stdout)
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return GhzRun(
        name=name,
        calls=int(report["options"]["total"]),
        responses=int(report["count"]),
        codes=dict(report.get("statusCodeDistribution") or {}),
        errors=dict(report.get("errorDistribution") or {}),
        rps=float(report["rps"]),
        p50_ms=latency.get(50, float("nan")),
        p99_ms=latency.get(99, float("nan")),
    )


def describe(run: GhzRun) -> str:
    """One line for a terminal."""
    verdict = "; ".join(run.problems()) or "ok"
    return (
        f"ghz {run.name}: {run.responses}/{run.calls} calls, {run.rps:,.1f} calls/s, "
        f"latency p50 {run.p50_ms:,.1f} ms, p99 {run.p99_ms:,.1f} ms: {verdict}"
    )


def section(runs: Sequence[GhzRun]) -> Section:
    """ghz's runs as a part of an HTML report."""
    rows = [
        (
            r.name,
            r.calls,
            ", ".join(f"{c} {n}" for c, n in sorted(r.codes.items())),
            f"{r.rps:,.1f}",
            f"{r.p50_ms:,.1f} ms",
            f"{r.p99_ms:,.1f} ms",
            "; ".join(r.problems()) or "none",
        )
        for r in runs
    ]
    headers = ("config", "calls", "status codes", "calls/s", "p50", "p99", "problems")
    note = (
        "<p>ghz measures each call from start to end (for GenerateStream: to the last "
        "message); the configs are in loadtest/ghz/.</p>"
    )
    return Section("ghz", note + table(headers, rows))


def run_all(
    ghz: Path,
    address: str,
    env: Mapping[str, str],
    out: Path,
    total: int | None = None,
    concurrency: int | None = None,
) -> list[GhzRun]:
    """Every config, through reflection then the protoset, with the configs' sizes unless
    `total` or `concurrency` is given; prints a line per run."""
    extra = [] if total is None else ["--total", str(total)]
    extra += [] if concurrency is None else ["--concurrency", str(concurrency)]
    runs = []
    for config in CONFIGS:
        for protoset in (False, True):
            run = run_ghz(ghz, config, address, protoset=protoset, env=env, out=out, extra=extra)
            print(describe(run), flush=True)
            runs.append(run)
    return runs
