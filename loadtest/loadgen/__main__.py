"""The token-aware load generator.

    python -m loadtest.loadgen run --target 127.0.0.1:50051 --concurrency 32 --requests 500
    python -m loadtest.loadgen run --target 127.0.0.1:50051 --rate 20 --requests 1200
    python -m loadtest.loadgen run --tgi http://127.0.0.1:8080 --concurrency 8
    python -m loadtest.loadgen compare A.json B.json

`run` sends GenerateStream calls (or TGI's /generate_stream with --tgi) drawn from a prompt mix
(--mix, default loadtest/mixes/chat.yaml) in a closed loop (--concurrency N) or an open loop
(--rate R, Poisson arrivals), prints a summary and writes a JSON file and an HTML report
(--out, --name). The API key is read from the environment variable named by --api-key-env.
`compare` prints two runs' numbers side by side and the ratios B/A. The exit code of `run` is
1 when a call ended with a status its class does not expect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from loadtest.loadgen.mix import MixError, load_mix
from loadtest.loadgen.runner import Load
from loadtest.loadgen.session import measure, write
from loadtest.loadgen.targets import GatewayTarget, TgiTarget
from loadtest.loadgen.text import comparison, summary_table
from loadtest.stack import API_KEY_ENV, ROOT

DEFAULT_MIX = ROOT / "loadtest" / "mixes" / "chat.yaml"
DEFAULT_OUT = ROOT / "bench-results" / "loadgen"


def main() -> None:
    args = _parser().parse_args()
    if args.command == "compare":
        sys.exit(_compare(args.a, args.b))
    sys.exit(asyncio.run(_run(args)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.loadgen",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="send load and write a report")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="the gateway's gRPC address, HOST:PORT")
    where.add_argument("--tgi", metavar="URL", help="a TGI backend's URL (no gateway)")
    how = run.add_mutually_exclusive_group(required=True)
    how.add_argument("--concurrency", type=int, help="closed loop: streams at once")
    how.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    run.add_argument(
        "--ramp", type=float, default=0.0, help="closed loop: start the streams over S seconds"
    )
    run.add_argument("--requests", type=int, default=500, help="requests to send (500)")
    run.add_argument("--mix", type=Path, default=DEFAULT_MIX, help="prompt mix (YAML)")
    run.add_argument("--seed", type=int, default=1, help="the same seed sends the same requests")
    run.add_argument(
        "--api-key-env", default=API_KEY_ENV, help=f"variable holding the key ({API_KEY_ENV})"
    )
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the outputs")
    run.add_argument("--name", default="loadgen", help="file names: NAME.json and NAME.html")
    run.add_argument("--title", default="Load test", help="the report's title")
    compare = commands.add_parser("compare", help="two runs side by side (B/A)")
    compare.add_argument("a", type=Path, help="run A's JSON")
    compare.add_argument("b", type=Path, help="run B's JSON")
    return parser


async def _run(args: argparse.Namespace) -> int:
    try:
        mix = load_mix(args.mix)
        load = Load(concurrency=args.concurrency, rate=args.rate, ramp=args.ramp, seed=args.seed)
    except (MixError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.requests < 1:
        print("error: --requests must be at least 1", file=sys.stderr)
        return 2
    target: TgiTarget | GatewayTarget = (
        TgiTarget(args.tgi)
        if args.tgi
        else GatewayTarget(args.target, os.environ.get(args.api_key_env))
    )
    async with target:
        outcome = await measure(target, mix, args.requests, load, args.title, seed=args.seed)
    facts = [("mix", f"{args.mix.name}: {mix.description}"), ("seed", str(args.seed))]
    data, page = write(outcome, args.out, args.name, args.title, facts)
    print(summary_table(outcome.summary.to_json()))
    print(f"report: {page}\ndata:   {data}")
    return 1 if outcome.summary.unexpected else 0


def _compare(a: Path, b: Path) -> int:
    try:
        summaries = [json.loads(path.read_text())["summary"] for path in (a, b)]
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}: give two JSON files written by `run`", file=sys.stderr)
        return 2
    print(f"A: {a}\nB: {b}")
    print(comparison(*summaries))
    return 0


if __name__ == "__main__":
    main()
