"""Run every ghz config of loadtest/ghz/ through server reflection and through the protoset.

    python -m loadtest.ghz --ghz .tools/bin/ghz [--target HOST:PORT] [--total N] [--concurrency N]

Without --target it starts a gateway in front of the paced fake TGI (loadtest/stack.py) and
stops it at the end; with --target the API key comes from $LOADTEST_API_KEY. Exit code 1
when a run has any error or fewer OK responses than calls (the CI check of `make test`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

from loadtest.ghz import run_all
from loadtest.stack import ROOT, Stack, StackOptions, start_stack


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.ghz", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ghz", type=Path, required=True, help="the ghz binary")
    parser.add_argument("--target", help="a running gateway; default: start one")
    parser.add_argument("--total", type=int, help="calls per config (default: the config's)")
    parser.add_argument("--concurrency", type=int, help="default: the config's")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "ghz")
    args = parser.parse_args()
    stack = nullcontext() if args.target else start_stack(StackOptions(out=args.out / "stack"))
    with stack as started:
        address, env = _where(args.target, started)
        runs = run_all(args.ghz, address, env, args.out, args.total, args.concurrency)
    sys.exit(1 if any(r.problems() for r in runs) else 0)


def _where(target: str | None, stack: Stack | None) -> tuple[str, Mapping[str, str]]:
    if stack is not None:
        return stack.address, stack.client_env()
    assert target is not None
    return target, os.environ


if __name__ == "__main__":
    main()
