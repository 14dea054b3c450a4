"""Engine benchmark over HTTP streaming (TGI protocol), on loopback.

Measures, each in one run so that ratios compare like with like on a noisy shared machine:
  1. tokens/s at 1, 8 and 32 concurrent streams of 128 new tokens (tiny and a ~7M Llama shape);
  2. continuous vs static batching on a mixed-length workload at 32 streams;
  3. time to first token of a prompt with a 512-token cached prefix vs uncached;
  4. float32 vs int8 vs int4: weight bytes and tokens/s.

With --smollm2, instead: SmolLM2-135M-Instruct's Q4_1 GGUF run as it is vs the same weights
dequantized to float32 and to bfloat16 (three engines up at once, measured in turn, the order
reversed every round): tokens/s and time to first token at 1, 8 and 32 streams of chat prompts
with long answers, the tokens really generated, and weight bytes.

Usage: python loadtest/bench_engine.py [--quick] [--smollm2] [--out bench-results/engine.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

SEVEN_M = [
    "--vocab-size", "8192", "--hidden-size", "256", "--num-layers", "4",
    "--num-heads", "4", "--num-kv-heads", "2", "--intermediate-size", "688",
]  # fmt: skip


@dataclass
class RunResult:
    streams: int
    requests: int
    tokens: int
    seconds: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    itl_p50_ms: float
    finish_reasons: dict[str, int]
    prompt_tokens: int = 0  # summed over the requests, as the server counted them

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(
    cmd: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd`, a server that will listen on loopback `port`; yield it once it accepts
    connections (it may still be loading: callers wait for its health check)."""
    # Its log goes to a file: a pipe nobody reads would stall a server that logs every request.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{cmd[0]} exited: {log.read().decode()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextmanager
def engine_process(*args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `streamgate engine` on a free loopback port; yield its base URL and process."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamgate", "engine", "--port", str(port), *args]
    with server_process(cmd, port) as proc:
        yield f"http://127.0.0.1:{port}", proc


@contextmanager
def engine(*args: str) -> Iterator[str]:
    """Run `streamgate engine` on a free loopback port; yield its base URL."""
    with engine_process(*args) as (url, _):
        yield url


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_ready(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    for _ in range(600):
        try:
            async with session.get(f"{url}/health") as r:
                if r.status == 200:
                    async with session.get(f"{url}/info") as info:
                        data: dict[str, Any] = await info.json()
                        return data
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("engine not ready")


@dataclass
class Streamed:
    """One streaming request as its client saw it."""

    tokens: int
    ttft: float
    gaps: list[float]  # between consecutive tokens
    finish_reason: str
    prompt_tokens: int = 0  # as the server counted them


# A client of one streaming protocol: (session, base URL, prompt, new tokens) -> the stream.
StreamFn = Callable[[aiohttp.ClientSession, str, str, int], Awaitable[Streamed]]
# Waits until a server answers requests.
ReadyFn = Callable[[aiohttp.ClientSession, str], Awaitable[object]]


class Arrivals:
    """When one stream's tokens arrived: the time to the first, the gaps between the others."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.ttft = 0.0
        self.gaps: list[float] = []
        self.count = 0

    def arrived(self) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.ttft = now - self.start
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.count += 1


async def stream_one(
    session: aiohttp.ClientSession, url: str, inputs: str, max_new_tokens: int
) -> Streamed:
    body = {"inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
    arrivals = Arrivals()
    finish_reason = "none"
    prompt_tokens = 0
    async with session.post(f"{url}/generate_stream", json=body) as resp:
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(event["error"])
            arrivals.arrived()
            if event.get("details"):
                finish_reason = event["details"]["finish_reason"]
                prompt_tokens = event["details"].get("input_length", 0)
    return Streamed(arrivals.count, arrivals.ttft, arrivals.gaps, finish_reason, prompt_tokens)


async def closed_loop(
    url: str,
    streams: int,
    jobs: list[tuple[str, int]],
    send: StreamFn = stream_one,
    ready: ReadyFn = wait_ready,
) -> RunResult:
    """`streams` workers take jobs (prompt, max_new_tokens) until none is left; `send` speaks
    the server's protocol (default: TGI's)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await ready(session, url)
        await send(session, url, "warm up", 4)
        pending = list(jobs)
        done: list[Streamed] = []

        async def worker() -> None:
            while pending:
                inputs, n = pending.pop()
                done.append(await send(session, url, inputs, n))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        seconds = time.perf_counter() - start
    ttfts = [d.ttft for d in done]
    gaps = [gap for d in done for gap in d.gaps]
    return RunResult(
        streams=streams,
        requests=len(jobs),
        tokens=sum(d.tokens for d in done),
        seconds=seconds,
        ttft_p50_ms=percentile(ttfts, 0.5) * 1e3,
        ttft_p90_ms=percentile(ttfts, 0.9) * 1e3,
        itl_p50_ms=percentile(gaps, 0.5) * 1e3,
        finish_reasons=dict(Counter(d.finish_reason for d in done)),
        prompt_tokens=sum(d.prompt_tokens for d in done),
    )


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["stream", "gate", "token", "batch", "cache", "model", "route", "reply", "fast"]
    return [" ".join(rng.choice(words) for _ in range(4)) + f" {i}" for i in range(n)]


async def throughput(url: str, streams: int, new_tokens: int, rounds: int) -> RunResult:
    jobs = [(p, new_tokens) for p in prompts(streams * rounds, seed=streams)]
    return await closed_loop(url, streams, jobs)


async def mixed_lengths(url: str, streams: int, requests: int) -> RunResult:
    rng = random.Random(1)
    jobs = [(p, rng.randint(16, 128)) for p in prompts(requests, seed=99)]
    return await closed_loop(url, streams, jobs)


async def prefix_ttft(url: str, prefixes: int) -> dict[str, float]:
    """TTFT of a ~512-token-prefix prompt the first time (uncached) and again (cached)."""
    rng = random.Random(5)
    uncached: list[float] = []
    cached: list[float] = []
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, url)
        for i in range(prefixes):
            prefix = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(511))
            uncached.append((await stream_one(session, url, f"{prefix}Q{i}a", 1)).ttft)
            cached.append((await stream_one(session, url, f"{prefix}Q{i}b", 1)).ttft)
    return {
        "uncached_ttft_p50_ms": statistics.median(uncached) * 1e3,
        "cached_ttft_p50_ms": statistics.median(cached) * 1e3,
        "ratio": statistics.median(cached) / statistics.median(uncached),
    }


async def info_of(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        return await wait_ready(session, url)


SMOLLM2 = "smollm2-135m-instruct"
# Questions whose answers run long (SmolLM2 counts on and on, or writes a long list or story).
LONG_ANSWERS = [
    "Count from 1 to 300, separated by commas.",
    "Write a long story about a lighthouse keeper and a storm.",
    "List one hundred animals, one per line.",
    "Explain in detail, step by step, how a computer boots.",
]
SMOLLM2_VARIANTS = {
    "Q4_1 (as stored)": [],
    "float32 (dequantized)": ["--dequantize"],
    "bfloat16 (dequantized)": ["--dequantize", "--dtype", "bfloat16"],
}


async def chat_prompts(url: str, questions: list[str]) -> list[str]:
    """`questions` as user turns in the chat template the engine reports in /info."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    info = await info_of(url)
    template = ImmutableSandboxedEnvironment().from_string(info["chat_template"])
    return [
        template.render(
            messages=[{"role": "user", "content": q}],
            add_generation_prompt=True,
            bos_token=info["bos_token"],
            eos_token=info["eos_token"],
        )
        for q in questions
    ]


def smollm2_report(rounds: int) -> dict[str, Any]:
    """Native Q4_1 vs dequantized float32 and bfloat16 on the same prompts, in turn."""
    report: dict[str, Any] = {}
    with ExitStack() as stack:
        # 8,192 KV tokens each (32 streams of ~70 + 128 tokens fit): three engines share memory.
        urls = {
            name: stack.enter_context(
                engine("--model", SMOLLM2, "--kv-cache-tokens", "8192", *flags)
            )
            for name, flags in SMOLLM2_VARIANTS.items()
        }
        infos = {name: asyncio.run(info_of(url)) for name, url in urls.items()}
        chats = asyncio.run(chat_prompts(urls["Q4_1 (as stored)"], LONG_ANSWERS))
        for streams in (1, 8, 32):
            requests = max(4, streams)
            jobs = [(chats[i % len(chats)], 128) for i in range(requests)]
            runs: dict[str, list[RunResult]] = {name: [] for name in urls}
            for r in range(rounds):
                order = list(urls) if r % 2 == 0 else list(reversed(urls))
                for name in order:
                    runs[name].append(asyncio.run(closed_loop(urls[name], streams, jobs)))
            for name, results in runs.items():
                merged = merge_rounds(results)
                report.setdefault(name, {"weight_bytes": infos[name]["weight_bytes"]})
                report[name][f"streams_{streams}"] = asdict(merged) | {
                    "tokens_per_s": merged.tokens_per_s
                }
    print("\nSmolLM2-135M-Instruct: variant, streams, tokens/s, TTFT p50/p90 ms, ITL p50 ms, "
          "tokens generated (requested), finish reasons, weight MB")  # fmt: skip
    for name, data in report.items():
        for streams in (1, 8, 32):
            run = data[f"streams_{streams}"]
            print(
                f"  {name:<24} {streams:>3} {run['tokens_per_s']:>7.1f} "
                f"{run['ttft_p50_ms']:>7.0f} {run['ttft_p90_ms']:>7.0f} {run['itl_p50_ms']:>6.1f} "
                f"{run['tokens']:>6} ({run['requests'] * 128}) {run['finish_reasons']} "
                f"{data['weight_bytes'] / 1e6:.0f}"
            )
    return report


def merge_rounds(results: list[RunResult]) -> RunResult:
    """Rounds of one measurement as one: summed tokens and time, medians of the percentiles."""
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(r.finish_reasons)
    return RunResult(
        streams=results[0].streams,
        requests=sum(r.requests for r in results),
        tokens=sum(r.tokens for r in results),
        seconds=sum(r.seconds for r in results),
        ttft_p50_ms=statistics.median(r.ttft_p50_ms for r in results),
        ttft_p90_ms=statistics.median(r.ttft_p90_ms for r in results),
        itl_p50_ms=statistics.median(r.itl_p50_ms for r in results),
        finish_reasons=dict(reasons),
        prompt_tokens=sum(r.prompt_tokens for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    parser.add_argument(
        "--smollm2", action="store_true", help="SmolLM2-135M-Instruct: Q4_1 vs dequantized"
    )
    parser.add_argument("--out", default=None, help="default: bench-results/engine[-smollm2].json")
    args = parser.parse_args()
    rounds = 1 if args.quick else 2
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "rounds": rounds}
    if args.smollm2:
        report["smollm2"] = smollm2_report(rounds)
    else:
        report.update(small_models_report(rounds, args.quick))
    out = Path(args.out or f"bench-results/engine{'-smollm2' if args.smollm2 else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


def small_models_report(rounds: int, quick: bool) -> dict[str, Any]:
    """Parts 1-4 of the module docstring, on tiny and a 7M Llama shape."""
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        seven_m = str(Path(tmp) / "llama-7m")
        subprocess.run(
            [sys.executable, "-m", "streamgate", "write-tiny-model", seven_m, *SEVEN_M],
            check=True,
        )
        for name, model in (("tiny", "tiny"), ("llama-7m", seven_m)):
            with engine("--model", model) as url:
                runs = [asyncio.run(throughput(url, c, 128, rounds)) for c in (1, 8, 32)]
            report[f"throughput_{name}"] = [
                asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in runs
            ]
            print(f"\n{name}: streams tokens/s ttft_p50_ms itl_p50_ms")
            for r in runs:
                print(
                    f"  {r.streams:>3} {r.tokens_per_s:>9.0f} "
                    f"{r.ttft_p50_ms:>8.1f} {r.itl_p50_ms:>6.2f}"
                )
            print(f"  32 streams / 1 stream = {runs[2].tokens_per_s / runs[0].tokens_per_s:.1f}x")

        batching = {}
        for mode in ("continuous", "static"):
            with engine("--model", seven_m, "--scheduling", mode) as url:
                batching[mode] = asyncio.run(mixed_lengths(url, 32, 96 * rounds))
        report["batching"] = {
            k: asdict(v) | {"tokens_per_s": v.tokens_per_s} for k, v in batching.items()
        }
        ratio = batching["continuous"].tokens_per_s / batching["static"].tokens_per_s
        print(
            f"\ncontinuous {batching['continuous'].tokens_per_s:.0f} tok/s vs static "
            f"{batching['static'].tokens_per_s:.0f} tok/s = {ratio:.2f}x; TTFT p50 "
            f"{batching['continuous'].ttft_p50_ms:.0f} ms vs "
            f"{batching['static'].ttft_p50_ms:.0f} ms"
        )

        with engine("--model", seven_m) as url:
            report["prefix"] = asyncio.run(prefix_ttft(url, 5 if quick else 10))
        print(f"\nprefix TTFT: {report['prefix']}")

        quant = {}
        for q in ("float32", "int8", "int4"):
            flags = ["--quantize", q] if q != "float32" else []
            with engine("--model", seven_m, *flags) as url:
                info = asyncio.run(info_of(url))
                one = asyncio.run(throughput(url, 1, 128, rounds))
                many = asyncio.run(throughput(url, 32, 128, rounds))
            quant[q] = {
                "weight_bytes": info.get("weight_bytes"),
                "tokens_per_s_1": one.tokens_per_s,
                "tokens_per_s_32": many.tokens_per_s,
            }
            print(f"{q}: {quant[q]}")
        report["quantization"] = quant
    return report


if __name__ == "__main__":
    main()
