"""The soak: thousands of streams through the gateway against the paced fake TGI, with calls
the client cancels at a random point and calls whose deadline is shorter than their generation
mixed in; then proof that nothing leaked.

    python -m loadtest.soak                       # 10,000 + 1,000 + 1,000 at concurrency 200
    python -m loadtest.soak --streams 1000 --cancels 100 --deadlines 100    # make test's size

A warm-up of the same mix runs first, so that pools, caches and the allocator reach their
working size; the gateway's memory and open files are read at rest after the warm-up and again
after the run: nothing in flight, and idle for a minute, by when the gateway's connection pool
has closed the idle backend connections the run left. The soak passes (exit 0) when:
  1. no call ended with a status its class does not expect (streams: OK; cancelled calls:
     CANCELLED, or OK when the stream had ended before the cancel point; calls with a deadline:
     DEADLINE_EXCEEDED);
  2. afterwards nothing is in flight: the gateway's active streams, upstream streams and
     admission queue, and the backend's batch (`tgi_batch_current_size`), are all 0;
  3. the gateway's resident memory after the run is within 10% of its value after the warm-up;
  4. its open file descriptors other than backend connections after the run are no more than
     after the warm-up, and its backend connections at most BACKEND_SLACK more. (At rest the
     pool keeps about as many connections as its periodic health checks and load reads use in
     its 30 s keep-alive: it reuses idle connections oldest first, so those requests keep
     about 1.5/s x 30 s of them alive, a number that varies by a few with their timing.)
The report (HTML and JSON) goes to bench-results/soak/ (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.loadgen.mix import Mix, load_mix
from loadtest.loadgen.report import Section, table
from loadtest.loadgen.runner import Load
from loadtest.loadgen.session import Outcome, measure, write
from loadtest.loadgen.stats import Summary
from loadtest.loadgen.targets import GatewayTarget
from loadtest.loadgen.text import headline
from loadtest.stack import ROOT, Stack, StackOptions, start_stack

MIX = ROOT / "loadtest" / "mixes" / "soak.yaml"
RSS_TOLERANCE = 0.10
SETTLE_TIMEOUT = 60.0  # seconds for in-flight gauges to reach 0 after a run
# Then idle this long: the gateway's pool closes backend connections idle for 30 s
# (backends/tgi.py), in a sweep every 30 s, so an idle connection lives up to 60 s; read sooner,
# open files would count a varying number of them.
REST_SECONDS = 62.0
FD_SAMPLES = 5  # open files: the least of a few readings (a health check may hold one more)
BACKEND_SLACK = 5
# What must be 0 once no call is running: (where, metric).
IN_FLIGHT = (
    ("gateway", "streamgate_active_streams"),
    ("gateway", "streamgate_upstream_streams"),
    ("gateway", "streamgate_queue_length"),
    ("backend", "tgi_batch_current_size"),
)


@dataclass(frozen=True)
class Resources:
    """The gateway's footprint at one moment."""

    rss_bytes: float
    open_fds: int
    backend_connections: int
    """Of the open files: TCP connections to the backend (the pool's, idle or busy)."""
    in_flight: dict[str, float]


@dataclass(frozen=True)
class Check:
    """One pass/fail criterion of the soak and what was seen."""

    name: str
    passed: bool
    detail: str


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--streams", type=int, default=10_000, help="calls read to the end")
    parser.add_argument("--cancels", type=int, default=1_000, help="calls cancelled midway")
    parser.add_argument("--deadlines", type=int, default=1_000, help="calls cut by a deadline")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--warmup", type=int, help="warm-up calls (default: a tenth, >= 500)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "soak")
    args = parser.parse_args()
    counts = {"stream": args.streams, "cancel": args.cancels, "deadline": args.deadlines}
    if min(counts.values()) < 0 or not sum(counts.values()) or args.concurrency < 1:
        parser.error("the counts must be >= 0 with at least one call, the concurrency >= 1")
    mix = with_counts(load_mix(MIX), counts)
    total = sum(counts.values())
    warmup = args.warmup if args.warmup is not None else max(500, total // 10)
    with start_stack(StackOptions(out=args.out / "stack")) as stack:
        results, outcome, readings = asyncio.run(
            soak(stack, mix, total, warmup, args.concurrency, args.seed)
        )
        description = stack.description
    facts = [
        ("backend", description),
        ("mix", f"{MIX.name}: " + ", ".join(f"{n:,} {k}" for k, n in counts.items())),
        ("warm-up", f"{warmup:,} calls of the same mix, same concurrency"),
    ]
    sections = [_verdict(results), _resources(readings)]
    data, page = write(outcome, args.out, "soak", "Soak", facts, sections)
    (args.out / "soak-checks.json").write_text(
        json.dumps(
            {
                "checks": [asdict(c) for c in results],
                "readings": {k: asdict(v) for k, v in readings.items()},
            },
            indent=1,
        )
    )
    print(headline(outcome.summary.to_json()))
    for check in results:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    print(f"report: {page}\ndata:   {data}")
    sys.exit(0 if all(c.passed for c in results) else 1)


def with_counts(mix: Mix, counts: dict[str, int]) -> Mix:
    """`mix` with each class weighted by its count (so that a plan of the sum has exactly
    those counts); classes with a count of 0 left out."""
    classes = [c.model_copy(update={"weight": counts[c.name]}) for c in mix.classes]
    return mix.model_copy(update={"classes": [c for c in classes if c.weight > 0]})


async def soak(
    stack: Stack, mix: Mix, total: int, warmup: int, concurrency: int, seed: int
) -> tuple[list[Check], Outcome, dict[str, Resources]]:
    """Warm up, read the gateway, run the soak, read it again; the checks."""
    load = Load(concurrency=concurrency, seed=seed)
    readings: dict[str, Resources] = {"start": _read(stack)}
    async with GatewayTarget(stack.address, stack.api_key) as target:
        if warmup:
            # Another seed: the warm-up's prompts are not the soak's.
            await measure(target, mix, warmup, load, "warm-up", seed=seed + 1000)
        readings["after warm-up"] = await _settled(stack)
        outcome = await measure(target, mix, total, load, "soak", seed=seed)
        readings["after the run"] = await _settled(stack)
    return checks(outcome.summary, readings), outcome, readings


async def _settled(stack: Stack) -> Resources:
    """The gateway's footprint at rest: once nothing is in flight (or after SETTLE_TIMEOUT),
    and REST_SECONDS later."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        if not any(_in_flight(stack).values()):
            break
        await asyncio.sleep(0.2)  # another process's gauges: polled
    await asyncio.sleep(REST_SECONDS)
    readings = []
    for _ in range(FD_SAMPLES):
        readings.append(_read(stack))
        await asyncio.sleep(0.2)
    return min(readings, key=lambda r: r.open_fds)


def _read(stack: Stack) -> Resources:
    """The gateway's footprint now."""
    pid = stack.gateway_pid
    sockets = _socket_inodes(pid)
    return Resources(
        rss_bytes=_rss_bytes(pid),
        open_fds=len(os.listdir(f"/proc/{pid}/fd")),
        backend_connections=_connections_to(sockets, urlsplit(stack.backend_url).port or 80),
        in_flight=_in_flight(stack),
    )


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def _connections_to(inodes: set[str], port: int) -> int:
    """How many of these sockets are established TCP connections to `port`."""
    count = 0
    for listing in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(listing).read_text().splitlines()[1:]:
            fields = line.split()  # sl, local, remote, state, ..., inode (10th)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            established = fields[3] == "01"
            count += established and remote_port == port and fields[9] in inodes
    return count


def _in_flight(stack: Stack) -> dict[str, float]:
    pages = {"gateway": stack.gateway_metrics(), "backend": stack.backend_metrics()}
    return {f"{where} {name}": pages[where].value(name) for where, name in IN_FLIGHT}


def _rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no VmRSS for process {pid}")


def checks(summary: Summary, readings: dict[str, Resources]) -> list[Check]:
    """The soak's verdict on a run's `summary` and the gateway's footprint at rest `readings`
    ("after warm-up", "after the run")."""
    warm, end = readings["after warm-up"], readings["after the run"]
    unexpected = summary.unexpected
    left = {name: v for name, v in end.in_flight.items() if v}
    growth = end.rss_bytes / warm.rss_bytes - 1
    mib = 1 << 20
    return [
        Check(
            "status codes",
            not unexpected,
            ", ".join(f"{n} x {code}" for code, n in sorted(unexpected.items()))
            or f"all {summary.requests:,} calls ended as their class expects",
        ),
        Check(
            "nothing in flight afterwards",
            not left,
            ", ".join(f"{name} = {v:g}" for name, v in left.items())
            or "active streams, upstream streams, queue and backend batch are all 0",
        ),
        Check(
            "memory",
            abs(growth) <= RSS_TOLERANCE,
            f"resident memory {warm.rss_bytes / mib:,.1f} MiB after the warm-up, "
            f"{end.rss_bytes / mib:,.1f} MiB after the run ({growth:+.1%}; limit "
            f"±{RSS_TOLERANCE:.0%})",
        ),
        Check(
            "open file descriptors",
            end.open_fds - end.backend_connections <= warm.open_fds - warm.backend_connections,
            f"{warm.open_fds - warm.backend_connections} after the warm-up, "
            f"{end.open_fds - end.backend_connections} after the run (backend connections aside)",
        ),
        Check(
            "backend connections",
            end.backend_connections <= warm.backend_connections + BACKEND_SLACK,
            f"{warm.backend_connections} after the warm-up, {end.backend_connections} after "
            f"the run (at rest; limit +{BACKEND_SLACK})",
        ),
    ]


def _verdict(checks: list[Check]) -> Section:
    rows = "".join(
        f'<tr><td>{html.escape(c.name)}</td><td class="{"pass" if c.passed else "fail"}">'
        f"{'PASS' if c.passed else 'FAIL'}</td><td>{html.escape(c.detail)}</td></tr>"
        for c in checks
    )
    return Section("Verdict", f"<table><tbody>{rows}</tbody></table>")


def _resources(readings: dict[str, Resources]) -> Section:
    names = list(next(iter(readings.values())).in_flight)
    rows = [
        (
            moment,
            f"{r.rss_bytes / (1 << 20):,.1f} MiB",
            str(r.open_fds),
            str(r.backend_connections),
            *(f"{r.in_flight[n]:g}" for n in names),
        )
        for moment, r in readings.items()
    ]
    headers = ("moment", "gateway RSS", "open fds", "backend connections", *names)
    return Section("The gateway's footprint", table(headers, rows))


if __name__ == "__main__":
    main()
