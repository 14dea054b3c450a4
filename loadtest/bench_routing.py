"""Routing benchmark: replica pickers on a multi-tenant workload with shared system prompts.

Four engine processes (tiny model, a KV budget that holds a quarter of the tenants' prefixes
each) behind one gateway pool. Each tenant's requests share a long system prompt; questions are
short.
Requests arrive at a fixed rate. For each picker (round_robin, least_load, prefix_affinity) the
same workload runs against a fresh gateway, with prompts new to the engines' caches; reported:
the engines' prefix-cache hit rate (cached prompt tokens / prompt tokens, from their /metrics),
time to first token p50/p90/mean, and generated tokens per second.

Usage: python loadtest/bench_routing.py [--quick] [--out bench-results/routing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from bench_gateway import free_port, percentile, process
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

PICKERS = ("round_robin", "least_load", "prefix_affinity")
TENANTS = 24
PREFIX_BYTES = 600  # the tiny model's tokenizer is byte-level: 600 tokens
KV_TOKENS = 4096  # per engine: about 6 of the 24 prefixes (plus the requests running)
NEW_TOKENS = 8


def engine_counters(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    wanted = (
        "streamgate_engine_prompt_tokens_total",
        "streamgate_engine_prefix_cache_hit_tokens_total",
    )
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


def system_prompt(run: str, tenant: int) -> str:
    words = f"[{run}] You are the assistant of tenant {tenant}; answer briefly and politely. "
    return (words * (PREFIX_BYTES // len(words) + 1))[:PREFIX_BYTES]


async def workload(target: str, run: str, requests: int, rate: float) -> dict[str, Any]:
    """`requests` calls at `rate` per second; TTFTs and generated tokens."""
    rng = random.Random(7)  # the same tenants and questions for every picker
    plan = [(rng.randrange(TENANTS), rng.randrange(10_000)) for _ in range(requests)]
    ttfts: list[float] = []
    generated = 0
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)

        async def one(tenant: int, question: int) -> None:
            nonlocal generated, failures
            request = pb.GenerateStreamRequest(
                prompt=system_prompt(run, tenant) + f"Question {question}: what is it?",
                stopping=pb.StoppingCriteria(max_new_tokens=NEW_TOKENS),
            )
            start = time.perf_counter()
            first = 0.0
            try:
                async for msg in stub.GenerateStream(request, timeout=120):
                    if msg.HasField("delta") and not first:
                        first = time.perf_counter() - start
                    if msg.HasField("end"):
                        generated += msg.end.usage.completion_tokens
            except grpc.aio.AioRpcError:
                failures += 1
                return
            ttfts.append(first)

        began = time.perf_counter()
        tasks = []
        for i, (tenant, question) in enumerate(plan):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(tenant, question)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    return {
        "ttft_p50_ms": percentile(ttfts, 0.5) * 1e3,
        "ttft_p90_ms": percentile(ttfts, 0.9) * 1e3,
        "ttft_mean_ms": sum(ttfts) / max(len(ttfts), 1) * 1e3,
        "generated_tokens_per_s": generated / wall,
        "requests": requests,
        "failures": failures,
    }


def gateway_config(path: Path, port: int, engines: list[str], picker: str) -> None:
    names = [f"e{i}" for i in range(len(engines))]
    path.write_text(
        json.dumps(
            {
                "listen": {"host": "127.0.0.1", "port": port},
                "backends": [
                    {"name": name, "url": url, "load_interval_seconds": 0.5}
                    for name, url in zip(names, engines, strict=True)
                ],
                "pools": [{"name": "pool", "backends": names, "picker": picker}],
                "routes": [{"name": "tiny", "pool": "pool"}],
                "logging": {"level": "WARNING"},
                "metrics": {"enabled": False},
                "cache": {"enabled": False},  # placement, not the response cache, is measured
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--out", default="bench-results/routing.json")
    args = parser.parse_args()
    requests = 96 if args.quick else 360
    py = sys.executable
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "engines": args.engines,
        "rate_per_s": args.rate,
        "requests": requests,
        "tenants": TENANTS,
        "prefix_tokens": PREFIX_BYTES,
        "kv_cache_tokens_per_engine": KV_TOKENS,
        "pickers": {},
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as engines:
        urls = []
        for _ in range(args.engines):
            port = free_port()
            engines.enter_context(
                process(py, "-m", "streamgate", "engine", "--port", str(port),
                        "--kv-cache-tokens", str(KV_TOKENS), "--torch-threads", "1", port=port)
            )  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
        for picker in PICKERS:
            port = free_port()
            config = Path(tmp) / f"{picker}.yaml"
            gateway_config(config, port, urls, picker)
            before = [engine_counters(u) for u in urls]
            with process(py, "-m", "streamgate", "serve", "--config", str(config), port=port):
                result = asyncio.run(workload(f"127.0.0.1:{port}", picker, requests, args.rate))
            after = [engine_counters(u) for u in urls]
            prompt = sum(
                a["streamgate_engine_prompt_tokens_total"]
                - b["streamgate_engine_prompt_tokens_total"]
                for a, b in zip(after, before, strict=True)
            )
            hits = sum(
                a["streamgate_engine_prefix_cache_hit_tokens_total"]
                - b["streamgate_engine_prefix_cache_hit_tokens_total"]
                for a, b in zip(after, before, strict=True)
            )
            result["prefix_hit_rate"] = hits / prompt if prompt else 0.0
            report["pickers"][picker] = result
            print(f"{picker:>16}: {result}", flush=True)
    rr, pa = report["pickers"]["round_robin"], report["pickers"]["prefix_affinity"]
    report["prefix_affinity_vs_round_robin"] = {
        "hit_rate_ratio": pa["prefix_hit_rate"] / rr["prefix_hit_rate"]
        if rr["prefix_hit_rate"]
        else float("inf"),
        "ttft_mean_ratio": pa["ttft_mean_ms"] / rr["ttft_mean_ms"],
        "throughput_ratio": pa["generated_tokens_per_s"] / rr["generated_tokens_per_s"],
    }
    print(f"prefix_affinity vs round_robin: {report['prefix_affinity_vs_round_robin']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
