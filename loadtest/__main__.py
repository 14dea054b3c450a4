"""`make loadtest`: start a gateway, run ghz and the token-aware load generator against it, and
write one HTML report.

    python -m loadtest --ghz .tools/bin/ghz [--backend fake|embedded] [--rate 20] [--requests 600]

1. A gateway on loopback in front of the fake TGI paced like a model (TTFT 100 ms, 20 ms per
   token; loadtest/stack.py), or of the embedded engine with its tiny model (--backend).
2. ghz: every config of loadtest/ghz/, through server reflection and through the protoset.
3. The load generator: an open loop (Poisson arrivals at --rate per second) of --requests
   calls drawn from loadtest/mixes/chat.yaml.
The report (bench-results/loadtest/report.html) has ghz's results, then the load generator's
numbers and plots. Exit code 1 when ghz or the load generator saw an error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from loadtest.ghz import run_all, section
from loadtest.loadgen.mix import Mix, load_mix
from loadtest.loadgen.runner import Load
from loadtest.loadgen.session import Outcome, measure, write
from loadtest.loadgen.targets import GatewayTarget
from loadtest.loadgen.text import summary_table
from loadtest.stack import ROOT, StackOptions, start_stack

MIX = ROOT / "loadtest" / "mixes" / "chat.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ghz", type=Path, required=True, help="the ghz binary")
    parser.add_argument("--backend", choices=("fake", "embedded"), default="fake")
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--requests", type=int, default=600, help="load generator calls")
    parser.add_argument("--ghz-total", type=int, default=1000, help="calls per ghz run")
    parser.add_argument("--ghz-concurrency", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "loadtest")
    args = parser.parse_args()
    mix = load_mix(MIX)
    with start_stack(StackOptions(out=args.out / "stack", backend=args.backend)) as stack:
        ghz_runs = run_all(
            args.ghz,
            stack.address,
            stack.client_env(),
            args.out / "ghz",
            args.ghz_total,
            args.ghz_concurrency,
        )
        outcome = asyncio.run(_measure(stack.address, stack.api_key, mix, args.requests, args.rate))
        backend = stack.description
    facts = [("backend", backend), ("mix", f"{MIX.name}: {mix.description}")]
    title = "Gateway load test"
    data, page = write(outcome, args.out, "report", title, facts, [section(ghz_runs)])
    print(summary_table(outcome.summary.to_json()))
    print(f"report: {page}\ndata:   {data}")
    failed = outcome.summary.unexpected or any(r.problems() for r in ghz_runs)
    sys.exit(1 if failed else 0)


async def _measure(address: str, api_key: str, mix: Mix, requests: int, rate: float) -> Outcome:
    async with GatewayTarget(address, api_key) as target:
        return await measure(target, mix, requests, Load(rate=rate), "load generator")


if __name__ == "__main__":
    main()
