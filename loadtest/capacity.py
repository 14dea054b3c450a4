"""The gateway's capacity on one core: how many concurrent streams it carries from a backend
at 20 ms per token while adding at most 10 ms to the time to first token (p99) and without
merging any steps, and the CPU time it spends per 1,000 relayed tokens.

    python -m loadtest.capacity [--levels 8,16,24,32,48,64,96] [--rounds 3] [--nice -10]

The gateway runs on CPU 0 (`taskset`), the paced fake TGI and this load generator on CPU 1;
on a shared machine, --nice below 0 (as root) keeps other work from taking their turn.
At each level N (concurrent streams, closed loop, 64-token answers, the N streams' first calls
spread over --ramp seconds so that the load is steady rather than a burst) the same requests go
directly to the fake TGI (its HTTP stream) and through the gateway, alternating, `--rounds`
times each; the added TTFT is the gateway's p99 minus the direct p99. Every level runs; the
capacity is the largest that passes. First, the load generator reads from bench_gateway.py's bare
grpc.aio server (on CPU 0, as fast as it sends) to show how many messages per second this
Python client can take on its core: the ceiling of what it can measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure

from loadtest.loadgen.mix import Mix, load_mix
from loadtest.loadgen.report import image, ms, new_figure, table
from loadtest.loadgen.runner import Load
from loadtest.loadgen.session import Outcome, command, machine, measure
from loadtest.loadgen.stats import Distribution, distribution
from loadtest.loadgen.targets import GatewayTarget, Target, TgiTarget
from loadtest.stack import ROOT, Pacing, Stack, StackOptions, start_bare_server, start_stack

MIX = ROOT / "loadtest" / "mixes" / "capacity.yaml"
GATEWAY_CPU, CLIENT_CPU = 0, 1
ADDED_TTFT_P99_LIMIT = 0.010
CALLS_PER_STREAM = 3  # calls each of the N streams makes per run (about 4 s at 64 tokens)
MIN_CALLS = 96  # calls per run at least: a p99 pooled over the rounds is not just the worst call
RAMP = 1.0  # seconds over which a run's N streams start: a steady load, not a burst of N calls


@dataclass(frozen=True)
class Level:
    """One concurrency level: the direct and the gateway runs pooled over the rounds."""

    streams: int
    direct_ttft_p50: float
    direct_ttft_p99: float
    gateway_ttft_p50: float
    gateway_ttft_p99: float
    direct_itl_p99: float
    gateway_itl_p99: float
    merged_messages: int
    """Seen by the client: messages with more than one token."""
    merged_events: float
    """Counted by the gateway (streamgate_merged_events_total)."""
    errors: int
    tokens: int
    """Tokens relayed by the gateway in its runs."""
    gateway_cpu_seconds: float
    gateway_tokens_per_s: float
    client_cpu: float
    """The load generator's CPU per second, gateway runs (1.0 = its core busy)."""

    @property
    def added_ttft_p99(self) -> float:
        return self.gateway_ttft_p99 - self.direct_ttft_p99

    @property
    def cpu_per_1k_tokens(self) -> float:
        return self.gateway_cpu_seconds / self.tokens * 1000 if self.tokens else float("nan")

    @property
    def passed(self) -> bool:
        return (
            self.added_ttft_p99 <= ADDED_TTFT_P99_LIMIT
            and self.merged_messages == 0
            and self.errors == 0
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.capacity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--levels", default="8,16,24,32,48,64,96", help="streams to try")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per level")
    parser.add_argument("--ttft", type=float, default=Pacing.ttft, help="backend TTFT, s")
    parser.add_argument("--itl", type=float, default=Pacing.itl, help="backend s/token")
    parser.add_argument("--no-lockstep", action="store_true", help="each stream on its own clock")
    parser.add_argument(
        "--ramp", type=float, default=RAMP, help="start a run's streams over S s (0: at once)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of this process and the ones it starts (below 0 needs root)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "capacity")
    args = parser.parse_args()
    levels = sorted({int(n) for n in args.levels.split(",")})
    # Before any thread or process starts (grpc's, asyncio's, the stack's): they inherit this
    # process's CPU and priority.
    os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        # On a shared machine, other work can hold the gateway's core for longer than a step
        # (20 ms): a higher priority keeps that noise out of what is measured.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    except PermissionError:
        parser.error(f"--nice {args.nice}: not permitted (below 0 needs root)")
    with start_bare_server(args.out, cpus=str(GATEWAY_CPU)) as bare:
        ceiling = asyncio.run(client_ceiling(bare))
    print(f"client ceiling: {ceiling:,.0f} messages/s read from the bare grpc.aio server")
    options = StackOptions(
        out=args.out / "stack",
        pacing=Pacing(ttft=args.ttft, itl=args.itl, lockstep=not args.no_lockstep),
        gateway_cpus=str(GATEWAY_CPU),
        backend_cpus=str(CLIENT_CPU),
    )
    with start_stack(options) as stack:
        results = asyncio.run(sweep(stack, levels, args.rounds, args.ramp))
        backend = stack.description
    passing = [level.streams for level in results if level.passed]
    capacity = max(passing, default=0)
    load = (
        f"closed loop at each level, N x {CALLS_PER_STREAM} (at least {MIN_CALLS}) calls of 64 "
        f"tokens per run, the N streams started over {args.ramp:g} s; {args.rounds} rounds"
    )
    _write(args.out, results, capacity, ceiling, [("backend", backend), ("load", load)], args.nice)
    print(f"capacity: {capacity} concurrent streams (added TTFT p99 <= 10 ms, nothing merged)")


async def client_ceiling(address: str) -> float:
    """Messages per second the load generator reads from a server that sends flat out."""
    async with GatewayTarget(address, None) as target:
        outcome = await measure(target, load_mix(MIX), 256, Load(concurrency=64), "ceiling")
    messages = sum(len(r.sizes) for r in outcome.result.records)
    return messages / outcome.result.duration


async def sweep(stack: Stack, levels: list[int], rounds: int, ramp: float) -> list[Level]:
    """Every level in turn (all of them: on a noisy machine a level can fail between two that
    pass, so an early stop would understate the capacity)."""
    mix = load_mix(MIX)
    results: list[Level] = []
    async with (
        TgiTarget(stack.backend_url) as direct,
        GatewayTarget(stack.address, stack.api_key) as gateway,
    ):
        await measure(gateway, mix, 16, Load(concurrency=8), "warm-up")
        for streams in levels:
            level = await _level(stack, direct, gateway, mix, streams, rounds, ramp)
            results.append(level)
            print(_line(level), flush=True)
    return results


async def _level(
    stack: Stack, direct: Target, gateway: Target, mix: Mix, streams: int, rounds: int, ramp: float
) -> Level:
    load = Load(concurrency=streams, ramp=ramp)
    count = max(streams * CALLS_PER_STREAM, MIN_CALLS)
    direct_runs: list[Outcome] = []
    gateway_runs: list[Outcome] = []
    cpu = merged = 0.0
    for r in range(rounds):
        seed = 100 * streams + r  # both targets get the same requests in a round
        direct_runs.append(await measure(direct, mix, count, load, f"direct {streams}", seed=seed))
        cpu_before, merged_before = _cpu_seconds(stack.gateway_pid), _merged(stack)
        via = await measure(gateway, mix, count, load, f"gateway {streams}", seed=seed)
        gateway_runs.append(via)
        cpu += _cpu_seconds(stack.gateway_pid) - cpu_before
        merged += _merged(stack) - merged_before
    d_ttft, g_ttft = _pooled_ttft(direct_runs), _pooled_ttft(gateway_runs)
    duration = sum(o.result.duration for o in gateway_runs)
    tokens = sum(o.summary.tokens for o in gateway_runs)
    return Level(
        streams=streams,
        direct_ttft_p50=d_ttft.p50,
        direct_ttft_p99=d_ttft.p99,
        gateway_ttft_p50=g_ttft.p50,
        gateway_ttft_p99=g_ttft.p99,
        direct_itl_p99=_pooled_itl(direct_runs).p99,
        gateway_itl_p99=_pooled_itl(gateway_runs).p99,
        merged_messages=sum(o.summary.merged_messages for o in gateway_runs),
        merged_events=merged,
        errors=sum(sum(o.summary.unexpected.values()) for o in direct_runs + gateway_runs),
        tokens=tokens,
        gateway_cpu_seconds=cpu,
        gateway_tokens_per_s=tokens / duration,
        client_cpu=sum(o.result.cpu_seconds for o in gateway_runs) / duration,
    )


def _pooled_ttft(runs: list[Outcome]) -> Distribution:
    return distribution(r.ttft for o in runs for r in o.result.records if r.ttft is not None)


def _pooled_itl(runs: list[Outcome]) -> Distribution:
    return distribution(g for o in runs for r in o.result.records for g in r.gaps)


def _merged(stack: Stack) -> float:
    return stack.gateway_metrics().value("streamgate_merged_events_total")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _line(level: Level) -> str:
    return (
        f"{level.streams:>4} streams: TTFT p99 direct {ms(level.direct_ttft_p99)}, "
        f"gateway {ms(level.gateway_ttft_p99)} (added {ms(level.added_ttft_p99)}); "
        f"ITL p99 {ms(level.gateway_itl_p99)}; merged {level.merged_messages}; "
        f"{level.gateway_tokens_per_s:,.0f} tokens/s; "
        f"{level.cpu_per_1k_tokens:.3f} CPU-s/1k tokens: {'pass' if level.passed else 'FAIL'}"
    )


def _write(
    out: Path,
    levels: list[Level],
    capacity: int,
    ceiling: float,
    setup: list[tuple[str, str]],
    nice: int,
) -> None:
    """capacity.json and capacity.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    facts = [
        ("result", f"{capacity} concurrent streams on one core"),
        ("criteria", "added TTFT p99 <= 10 ms, no merged messages, no errors"),
        *setup,
        ("client ceiling", f"{ceiling:,.0f} messages/s (bare grpc.aio server, one core)"),
        (
            "placement",
            f"gateway on CPU {GATEWAY_CPU}; fake TGI and load generator on CPU {CLIENT_CPU}; "
            f"all at nice {nice}",
        ),
        ("machine", machine()),
        ("command", command()),
    ]
    rows = [
        {
            **asdict(level),
            "added_ttft_p99": level.added_ttft_p99,
            "cpu_per_1k_tokens": level.cpu_per_1k_tokens,
            "passed": level.passed,
        }
        for level in levels
    ]
    (out / "capacity.json").write_text(json.dumps({"facts": dict(facts), "levels": rows}, indent=1))
    page = _PAGE.format(
        facts=table(None, facts),
        levels=table(
            (
                "streams",
                "TTFT p99 direct",
                "TTFT p99 gateway",
                "added p99",
                "ITL p99 direct",
                "ITL p99 gateway",
                "merged",
                "errors",
                "tokens/s",
                "CPU-s / 1k tokens",
                "client CPU",
                "",
            ),
            [
                (
                    lv.streams,
                    ms(lv.direct_ttft_p99),
                    ms(lv.gateway_ttft_p99),
                    ms(lv.added_ttft_p99),
                    ms(lv.direct_itl_p99),
                    ms(lv.gateway_itl_p99),
                    lv.merged_messages,
                    lv.errors,
                    f"{lv.gateway_tokens_per_s:,.0f}",
                    f"{lv.cpu_per_1k_tokens:.3f}",
                    f"{lv.client_cpu:.0%}",
                    "pass" if lv.passed else "FAIL",
                )
                for lv in levels
            ],
        ),
        plot=image(_plot(levels)),
    )
    (out / "capacity.html").write_text(page)
    print(f"report: {out / 'capacity.html'}\ndata:   {out / 'capacity.json'}")


def _plot(levels: list[Level]) -> Figure:
    figure, axis = new_figure()
    streams = [lv.streams for lv in levels]
    axis.plot(streams, [lv.added_ttft_p99 * 1e3 for lv in levels], "o-", label="added TTFT p99")
    axis.axhline(ADDED_TTFT_P99_LIMIT * 1e3, color="#c03030", linestyle="--", label="limit")
    axis.set_xlabel("concurrent streams")
    axis.set_ylabel("ms")
    axis.legend(loc="upper left")
    cpu = axis.twinx()
    cpu.plot(streams, [lv.cpu_per_1k_tokens for lv in levels], "s-", color="#e08030")
    cpu.set_ylabel("gateway CPU-s per 1,000 tokens", color="#e08030")
    return figure


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gateway capacity</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; white-space: nowrap; }}
img {{ max-width: 100%; }}</style>
</head><body>
<h1>Gateway capacity on one core</h1>
{facts}
<h2>By concurrency</h2>
{levels}
{plot}
<p>Direct: the load generator reads the fake TGI's HTTP stream itself. Gateway: the same
requests through the gateway (gRPC). Added TTFT p99 = gateway p99 - direct p99, pooled over
the rounds, which alternate direct and gateway runs. Merged: messages that carried more than
one token (the gateway merges steps only for a client that reads slower than they arrive).
CPU-s / 1k tokens: the gateway process's CPU time (all threads) during its runs divided by the
tokens it relayed. Client CPU: the load generator's CPU per second during the gateway runs;
near 100% its own core limits what it can measure.</p>
</body></html>
"""


if __name__ == "__main__":
    main()
