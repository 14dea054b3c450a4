"""The browser door against the gRPC port of the same gateway, on the same workload.

1. Relay: a fake TGI streams tokens faster than any gateway can relay (16 events per write,
   256 tokens per call); clients read GenerateStream through the gRPC port (grpc.aio) and
   through the browser door (Connect, binary, HTTP/1.1 as a browser speaks it without TLS) at 1
   and 64 concurrent streams, rounds alternating between the doors.
2. Added TTFT: time to the first token from the engine directly (TGI SSE), through the gRPC
   port and through the browser door, at 1 and 64 concurrent streams, rounds alternating.

Usage: python loadtest/bench_connect.py [--quick] [--out bench-results/connect.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench_gateway import (
    ROOT,
    direct_ttft,
    free_port,
    gateway_config,
    gateway_ttft,
    percentile,
    process,
    relay_rate,
)
from streamgate_client.v1 import generation_pb2 as pb

STREAM = "/streamgate.v1.GenerationService/GenerateStream"
HEADERS = {"content-type": "application/connect+proto", "connect-protocol-version": "1"}
_END_STREAM = 0x02


def envelope(message: pb.GenerateStreamRequest) -> bytes:
    data = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


async def connect_stream(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> list[pb.GenerateStreamResponse]:
    """One Connect GenerateStream call: its messages (an error fails the benchmark)."""
    messages: list[pb.GenerateStreamResponse] = []
    buffer = b""
    async with session.post(url + STREAM, data=body, headers=HEADERS) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while len(buffer) >= 5:
                flags, size = struct.unpack(">BI", buffer[:5])
                if len(buffer) < 5 + size:
                    break
                data, buffer = buffer[5 : 5 + size], buffer[5 + size :]
                if flags & _END_STREAM:
                    if data != b"{}":
                        raise RuntimeError(f"the stream failed: {data.decode()}")
                    return messages
                messages.append(pb.GenerateStreamResponse.FromString(data))
    raise RuntimeError("the stream ended without its end message")


async def connect_relay_rate(url: str, streams: int, tokens: int, calls: int) -> dict[str, float]:
    """Messages/s and tokens/s received by `streams` concurrent Connect readers."""
    body = envelope(
        pb.GenerateStreamRequest(
            prompt="relay",
            stopping=pb.StoppingCriteria(max_new_tokens=tokens),
            response=pb.ResponseOptions(tokens=True),
        )
    )
    counts = {"messages": 0, "tokens": 0}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                messages = await connect_stream(session, url, body)
                counts["messages"] += len(messages)
                counts["tokens"] += sum(len(m.delta.tokens) for m in messages)

        await worker(1)  # warm up: connection, route, backend pool
        counts = {"messages": 0, "tokens": 0}
        start = time.perf_counter()
        await asyncio.gather(*(worker(max(1, calls // streams)) for _ in range(streams)))
        seconds = time.perf_counter() - start
    return {
        "messages_per_s": counts["messages"] / seconds,
        "tokens_per_s": counts["tokens"] / seconds,
    }


async def connect_ttft(url: str, streams: int, prompt: str) -> list[float]:
    """Time to the first Delta of `streams` concurrent Connect calls."""
    body = envelope(
        pb.GenerateStreamRequest(prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=4))
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> float:
            start = time.perf_counter()
            first = 0.0
            async with session.post(url + STREAM, data=body, headers=HEADERS) as resp:
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    # Start is the first message; the first Delta is the next one.
                    while not first and len(buffer) >= 5:
                        size = struct.unpack(">I", buffer[1:5])[0]
                        if len(buffer) < 5 + size:
                            break
                        message = pb.GenerateStreamResponse.FromString(buffer[5 : 5 + size])
                        buffer = buffer[5 + size :]
                        if message.HasField("delta"):
                            first = time.perf_counter() - start
            return first

        await one()
        return list(await asyncio.gather(*(one() for _ in range(streams))))


def both_doors_config(path: Path, grpc_port: int, http_port: int, backend_url: str) -> None:
    """bench_gateway's gateway config with the browser door on `http_port` too."""
    gateway_config(path, grpc_port, backend_url)
    config = json.loads(path.read_text())
    config["listen"]["http"] = {"enabled": True, "host": "127.0.0.1", "port": http_port}
    path.write_text(json.dumps(config))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": percentile(values, 0.5), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-results/connect.json")
    args = parser.parse_args()

    py = sys.executable
    tokens = 256
    calls = 64 if args.quick else 192
    relay_rounds = 2 if args.quick else 4
    ttft_rounds = 2 if args.quick else 5
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        fake_port, grpc_port, http_port = free_port(), free_port(), free_port()
        config = Path(tmp) / "gateway.yaml"  # JSON is YAML
        both_doors_config(config, grpc_port, http_port, f"http://127.0.0.1:{fake_port}")
        fake = [py, str(ROOT / "tests/support/fake_tgi.py"), "--port", str(fake_port)]
        gateway = [py, "-m", "streamgate", "serve", "--config", str(config)]
        grpc_target, http_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"
        relay: dict[str, Any] = {}
        with process(*fake, "--batch", "16", port=fake_port), process(*gateway, port=http_port):
            for streams in (1, 64):
                doors: dict[str, list[dict[str, float]]] = {"grpc": [], "connect": []}
                for _ in range(relay_rounds):
                    doors["grpc"].append(
                        asyncio.run(relay_rate(grpc_target, streams, tokens, calls))
                    )
                    doors["connect"].append(
                        asyncio.run(connect_relay_rate(http_url, streams, tokens, calls))
                    )
                relay[str(streams)] = {
                    door: {
                        "messages_per_s": spread([r["messages_per_s"] for r in runs]),
                        "tokens_per_s": spread([r["tokens_per_s"] for r in runs]),
                    }
                    for door, runs in doors.items()
                }
                print(f"relay {streams:>2} streams: {relay[str(streams)]}", flush=True)
        report["relay"] = relay

        engine_port, grpc2_port, http2_port = free_port(), free_port(), free_port()
        config2 = Path(tmp) / "gateway-engine.yaml"
        engine_url = f"http://127.0.0.1:{engine_port}"
        both_doors_config(config2, grpc2_port, http2_port, engine_url)
        engine = [py, "-m", "streamgate", "engine", "--model", "tiny", "--port", str(engine_port)]
        gateway2 = [py, "-m", "streamgate", "serve", "--config", str(config2)]
        grpc_target, http_url = f"127.0.0.1:{grpc2_port}", f"http://127.0.0.1:{http2_port}"
        ttft: dict[str, Any] = {}
        with process(*engine, port=engine_port), process(*gateway2, port=http2_port):
            for streams in (1, 64):
                seen: dict[str, list[float]] = {"direct": [], "grpc": [], "connect": []}
                # One stream gives one sample per round: take more rounds for its p99.
                for r in range(ttft_rounds * (20 if streams == 1 else 1)):
                    prompt = f"ttft round {r} "
                    seen["direct"] += asyncio.run(direct_ttft(engine_url, streams, prompt + "d"))
                    seen["grpc"] += asyncio.run(gateway_ttft(grpc_target, streams, prompt + "g"))
                    seen["connect"] += asyncio.run(connect_ttft(http_url, streams, prompt + "c"))
                row: dict[str, float] = {"samples": len(seen["connect"])}
                for name, values in seen.items():
                    row[f"{name}_p50_ms"] = percentile(values, 0.5) * 1e3
                    row[f"{name}_p99_ms"] = percentile(values, 0.99) * 1e3
                for door in ("grpc", "connect"):
                    for q in ("p50", "p99"):
                        row[f"{door}_added_{q}_ms"] = row[f"{door}_{q}_ms"] - row[f"direct_{q}_ms"]
                ttft[str(streams)] = row
                print(f"ttft {streams:>2} streams: {row}", flush=True)
        report["ttft"] = ttft

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
