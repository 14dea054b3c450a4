"""Gateway benchmark on loopback: relay rate and added time to first token.

1. Relay: a fake TGI streams tokens faster than any gateway can relay
   (tests/support/fake_tgi.py, its own process); clients read GenerateStream through the gateway
   at 1 and 64 concurrent streams. The same clients read the same messages (Start, one Delta per
   token, End) from a bare grpc.aio server in the same run: the ratio is the gateway's relay
   efficiency.
2. Added TTFT: time to the first token from the engine directly (TGI SSE over HTTP) and through the
   gateway (gRPC) at 1 and 64 concurrent streams, alternating rounds; p50/p99 of both.

Usage: python loadtest/bench_gateway.py [--quick] [--out bench-results/gateway.json]
       python loadtest/bench_gateway.py bare --port N --tokens N   (the bare server, internal)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def process(*cmd: str, port: int) -> Iterator[None]:
    """Run a server process until the block ends; wait until it listens on `port`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ---- the bare server: the same messages, no backend -------------------------------------------


class BareService(pb_grpc.GenerationServiceServicer):
    """Sends Start, `max_new_tokens` Deltas and End as fast as grpc.aio allows."""

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        count = request.stopping.max_new_tokens or 16
        yield pb.GenerateStreamResponse(start=pb.Start(request_id="bare", route="bare"))
        for i in range(count):
            token = pb.Token(id=i, text=f"t{i} ")
            yield pb.GenerateStreamResponse(delta=pb.Delta(text=token.text, tokens=[token]))
        end = pb.End(finish_reason=pb.FINISH_REASON_LENGTH)
        yield pb.GenerateStreamResponse(end=end)


async def serve_bare(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GenerationServiceServicer_to_server(BareService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# ---- clients ------------------------------------------------------------------------------------


async def relay_rate(target: str, streams: int, tokens: int, calls: int) -> dict[str, float]:
    """Messages/s and tokens/s received by `streams` concurrent GenerateStream readers."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        # Token entries count every token even when the gateway merges several into one Delta.
        request = pb.GenerateStreamRequest(
            prompt="relay",
            stopping=pb.StoppingCriteria(max_new_tokens=tokens),
            response=pb.ResponseOptions(tokens=True),
        )
        messages = 0
        relayed = 0

        async def worker(n: int) -> None:
            nonlocal messages, relayed
            for _ in range(n):
                async for msg in stub.GenerateStream(request):
                    messages += 1
                    relayed += len(msg.delta.tokens)

        await worker(1)  # warm up: connection, route, backend pool
        messages = relayed = 0
        start = time.perf_counter()
        await asyncio.gather(*(worker(max(1, calls // streams)) for _ in range(streams)))
        seconds = time.perf_counter() - start
    return {"messages_per_s": messages / seconds, "tokens_per_s": relayed / seconds}


async def gateway_ttft(target: str, streams: int, prompt: str) -> list[float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        request = pb.GenerateStreamRequest(
            prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=4)
        )

        async def one() -> float:
            start = time.perf_counter()
            first = 0.0
            async for msg in stub.GenerateStream(request):
                if msg.HasField("delta") and not first:
                    first = time.perf_counter() - start
            return first

        await one()
        return list(await asyncio.gather(*(one() for _ in range(streams))))


async def sequential_ttft(target: str, calls: int) -> list[float]:
    """Time to the first Delta of `calls` one-at-a-time calls (the gRPC hop, for scale)."""
    times: list[float] = []
    for _ in range(calls):
        times += await gateway_ttft(target, 1, "hop")
    return times


async def direct_ttft(url: str, streams: int, prompt: str) -> list[float]:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 4}}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> float:
            start = time.perf_counter()
            first = 0.0
            async with session.post(f"{url}/generate_stream", json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data:") and not first:
                        first = time.perf_counter() - start
            return first

        await one()
        return list(await asyncio.gather(*(one() for _ in range(streams))))


def gateway_config(path: Path, port: int, backend_url: str) -> None:
    path.write_text(
        json.dumps(
            {
                "listen": {"host": "127.0.0.1", "port": port},
                "backends": [{"name": "b0", "url": backend_url}],
                "routes": [{"name": "bench", "backends": ["b0"]}],
                "default_route": "bench",
                "logging": {"level": "WARNING"},
                "metrics": {"enabled": False},
                # Every call must reach the backend (the same prompt repeats).
                "cache": {"enabled": False},
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "bare"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-results/gateway.json")
    args = parser.parse_args()
    if args.mode == "bare":
        asyncio.run(serve_bare(args.port))
        return

    py = sys.executable
    tokens = 256
    calls = 64 if args.quick else 192
    rounds = 2 if args.quick else 5
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        fake_port, bare_port, gw_port = free_port(), free_port(), free_port()
        config = Path(tmp) / "gateway.yaml"  # JSON is YAML
        gateway_config(config, gw_port, f"http://127.0.0.1:{fake_port}")
        fake_tgi = str(ROOT / "tests/support/fake_tgi.py")
        fake = [py, fake_tgi, "--port", str(fake_port), "--batch", "16"]
        bare = [py, __file__, "bare", "--port", str(bare_port)]
        gateway = [py, "-m", "streamgate", "serve", "--config", str(config)]
        relay: dict[str, dict[str, float]] = {}
        with (
            process(*fake, port=fake_port),
            process(*bare, port=bare_port),
            process(*gateway, port=gw_port),
        ):
            for streams in (1, 64):
                gw = asyncio.run(relay_rate(f"127.0.0.1:{gw_port}", streams, tokens, calls))
                base = asyncio.run(relay_rate(f"127.0.0.1:{bare_port}", streams, tokens, calls))
                relay[str(streams)] = {
                    "gateway_messages_per_s": gw["messages_per_s"],
                    "bare_messages_per_s": base["messages_per_s"],
                    "gateway_tokens_per_s": gw["tokens_per_s"],
                    "bare_tokens_per_s": base["tokens_per_s"],
                    "message_ratio": gw["messages_per_s"] / base["messages_per_s"],
                    "token_ratio": gw["tokens_per_s"] / base["tokens_per_s"],
                }
                print(f"relay {streams:>2} streams: {relay[str(streams)]}")
            hop = asyncio.run(sequential_ttft(f"127.0.0.1:{bare_port}", 50))
        report["relay"] = relay
        report["bare_first_message"] = {
            "p50_ms": percentile(hop, 0.5) * 1e3,
            "p99_ms": percentile(hop, 0.99) * 1e3,
            "samples": len(hop),
        }
        print(f"bare server, first Delta: {report['bare_first_message']}")

        engine_port, gw2_port = free_port(), free_port()
        config2 = Path(tmp) / "gateway-engine.yaml"
        engine_url = f"http://127.0.0.1:{engine_port}"
        gateway_config(config2, gw2_port, engine_url)
        engine = [py, "-m", "streamgate", "engine", "--port", str(engine_port)]
        gateway2 = [py, "-m", "streamgate", "serve", "--config", str(config2)]
        ttft: dict[str, dict[str, float]] = {}
        with process(*engine, port=engine_port), process(*gateway2, port=gw2_port):
            for streams in (1, 64):
                direct: list[float] = []
                via: list[float] = []
                # One stream gives one sample per round: take more rounds for its p99.
                for r in range(rounds * (20 if streams == 1 else 1)):
                    prompt = f"ttft round {r} "
                    direct += asyncio.run(direct_ttft(engine_url, streams, prompt + "d"))
                    via += asyncio.run(gateway_ttft(f"127.0.0.1:{gw2_port}", streams, prompt + "g"))
                ttft[str(streams)] = {
                    "direct_p50_ms": percentile(direct, 0.5) * 1e3,
                    "gateway_p50_ms": percentile(via, 0.5) * 1e3,
                    "direct_p99_ms": percentile(direct, 0.99) * 1e3,
                    "gateway_p99_ms": percentile(via, 0.99) * 1e3,
                    "added_p50_ms": (percentile(via, 0.5) - percentile(direct, 0.5)) * 1e3,
                    "added_p99_ms": (percentile(via, 0.99) - percentile(direct, 0.99)) * 1e3,
                    "samples": len(via),
                }
                print(f"ttft {streams:>2} streams: {ttft[str(streams)]}")
        report["ttft"] = ttft

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
