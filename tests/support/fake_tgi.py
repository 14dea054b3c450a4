"""A fault-injecting fake TGI server (aiohttp), runnable as its own process.

    python tests/support/fake_tgi.py --port 8081 [--mode normal] [--token-delay 0] ...

It exists to produce the faults a real TGI (or what stands in front of it) can produce, on
demand, and to be a backend that streams faster than any gateway can relay. It speaks TGI's
framing: `data:<compact json>\\n\\n` events, `:` keep-alive comments, in-stream
`{"error", "error_type"}` events, HTTP 200 on every stream.

The behaviour of a request is its mode: the `--mode` default, or the prompt's first line when
it starts with `mode:<name>`, optionally followed by `key=value` overrides, e.g.
`mode:drop after=3` or `mode:slow_first first_delay=1 keepalive=0.1`.

Modes:
  normal           N tokens ("t0 ", "t1 ", ...; N = max_new_tokens or --tokens), then the last
                   event with generated_text and details; --token-delay between tokens
  error_mid_stream `after` tokens, then an in-stream `generation` error
  overloaded       an in-stream `overloaded` error at once (HTTP 429 JSON when not streaming)
  validation       an in-stream `validation` error at once (HTTP 422 JSON when not streaming)
  malformed        `after` tokens, then a data line that is not JSON
  keepalive_only   `:` comments every `keepalive` s (default 0.2), never a token, until the
                   client leaves
  drop             `after` tokens, then the TCP connection is reset (no final event, no end)
  eof              `after` tokens, then the response ends cleanly but without a final event
  hang             headers, then nothing at all until the client leaves
  slow_first       waits `first_delay` s (sending `:` comments every `keepalive` s if given),
                   then streams as `normal`
  http_error       a non-200 answer, as a proxy gives: `status` (default 503), TGI's error
                   JSON (or an HTML page with `json=0`)

Other per-request keys: tokens, delay (between tokens), crlf=1 (CRLF line ends), space=1
(`data: ` with a space), batch (events per write).

Pacing, for load tests that measure the gateway rather than a model (`normal`, `slow_first`):
  ttft=S       the wait before the first token (default: `delay`, like every other token)
  lockstep=1   tokens fall on one clock of `delay`-long steps shared by every stream, as the
               steps of a continuously batching engine: all running streams get a token at the
               same moment; the first token comes at the first step at least `ttft` after the
               request, and a stream that falls behind skips to the next step
e.g. `--ttft 0.1 --token-delay 0.02 --lockstep` behaves like a model at 50 tokens/s per stream.

`GET /stats` reports requests, disconnects (clients gone before the answer ended), completed
streams, the streams in flight now (`active`) and the number of distinct TCP connections that
carried requests. A test that serves the app in its own event loop reads them directly:
`app[FAKE].stats` (support.fake.serve_fake). `GET /metrics` has TGI's load gauges
(`tgi_batch_current_size`: streams in flight; `tgi_queue_size`: 0), which gateways scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

MODES = (
    "normal",
    "error_mid_stream",
    "overloaded",
    "validation",
    "malformed",
    "keepalive_only",
    "drop",
    "eof",
    "hang",
    "slow_first",
    "http_error",
)
# Every wait is bounded even if a client never leaves.
MAX_WAIT_SECONDS = 300.0
# Pause after the last token before a `drop`, so that the client has read the tokens when the
# reset arrives (a reset may discard data the client has not read yet).
DROP_PAUSE_SECONDS = 0.2


@dataclass(frozen=True)
class Behaviour:
    """How to answer one request: the CLI defaults, overridden by the prompt."""

    mode: str = "normal"
    tokens: int = 20
    delay: float = 0.0
    first_delay: float = 1.0
    keepalive: float = 0.0  # 0: no keep-alive comments (keepalive_only uses 0.2 then)
    after: int = 3
    status: int = 503
    json: bool = True
    crlf: bool = False
    space: bool = False
    batch: int = 1
    ttft: float | None = None  # None: `delay`
    lockstep: bool = False

    def override(self, inputs: str) -> Behaviour:
        """Apply `mode:<name> key=value ...` from the prompt's first line."""
        if not inputs.startswith("mode:"):
            return self
        words = inputs.split("\n", 1)[0].split()
        changes: dict[str, Any] = {"mode": words[0][len("mode:") :]}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in _FIELD_TYPES:
                continue
            kind = _FIELD_TYPES[key]
            changes[key] = value not in ("0", "false") if kind is bool else kind(value)
        return replace(self, **changes)


_FIELD_TYPES: dict[str, type] = {
    "tokens": int,
    "delay": float,
    "first_delay": float,
    "keepalive": float,
    "after": int,
    "status": int,
    "json": bool,
    "crlf": bool,
    "space": bool,
    "batch": int,
    "ttft": float,
    "lockstep": bool,
}


@dataclass
class Stats:
    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    active: int = 0  # streams in flight
    connections: int = 0  # distinct TCP connections that carried a generation request
    by_mode: dict[str, int] = field(default_factory=dict)
    # Transports seen so far; weak, so that a new connection never passes for a closed one.
    transports: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "disconnects": self.disconnects,
            "active": self.active,
            "by_mode": self.by_mode,
            "connections": self.connections,
        }


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class FakeTGI:
    """The request handlers, with the default behaviour and the counters."""

    def __init__(self, default: Behaviour) -> None:
        self.default = default
        self.stats = Stats()

    # ---- routes ------------------------------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": "fake/tgi",
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 1024,
                "max_total_tokens": 2048,
                "validation_workers": 1,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "fake",
                "sha": None,
                "docker_label": None,
                "fake_default_mode": self.default.mode,
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.json())

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE tgi_queue_size gauge",
            "tgi_queue_size 0",
            "# TYPE tgi_batch_current_size gauge",
            f"tgi_batch_current_size {self.stats.active}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await self._start(request)
        return await self._stream(request, body)

    async def compat(self, request: web.Request) -> web.StreamResponse:
        body = await self._start(request)
        if body.get("stream"):
            return await self._stream(request, body)
        return self._unary(body, as_list=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return self._unary(await self._start(request), as_list=False)

    # ---- generation --------------------------------------------------------------------------

    async def _start(self, request: web.Request) -> dict[str, Any]:
        self.stats.requests += 1
        transport = request.transport
        if transport is not None and transport not in self.stats.transports:
            self.stats.transports.add(transport)
            self.stats.connections += 1
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPUnprocessableEntity(
                text=json.dumps({"error": "invalid JSON", "error_type": "validation"}),
                content_type="application/json",
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            raise web.HTTPUnprocessableEntity(
                text=json.dumps({"error": "missing inputs", "error_type": "validation"}),
                content_type="application/json",
            )
        return body

    def _behaviour(self, body: dict[str, Any]) -> Behaviour:
        b = self.default.override(body["inputs"])
        self.stats.by_mode[b.mode] = self.stats.by_mode.get(b.mode, 0) + 1
        return b

    def _unary(self, body: dict[str, Any], *, as_list: bool) -> web.Response:
        b = self._behaviour(body)
        if b.mode in ("normal", "slow_first"):
            params = body.get("parameters") or {}
            n = _token_count(params, b)
            answer = {"generated_text": "".join(f"t{i} " for i in range(n))}
            self.stats.completed += 1
            return web.json_response([answer] if as_list else answer)
        status, error = {
            "overloaded": (429, ("Model is overloaded", "overloaded")),
            "validation": (422, ("Input validation error: fake", "validation")),
            "http_error": (b.status, ("fake HTTP error", None)),
        }.get(b.mode, (424, ("Request failed during generation: fake", "generation")))
        return _error_response(status, error[0], error[1], as_json=b.json)

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.stats.active += 1
        try:
            return await self._answer_stream(request, body)
        finally:
            self.stats.active -= 1

    async def _answer_stream(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        b = self._behaviour(body)
        if b.mode == "http_error":
            error_type = {429: "overloaded", 422: "validation", 424: "generation"}.get(b.status)
            return _error_response(b.status, "fake HTTP error", error_type, as_json=b.json)
        params = body.get("parameters") or {}
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        sep = b"\r\n" if b.crlf else b"\n"
        prefix = b"data: " if b.space else b"data:"
        keep_alive = b":" + sep + sep

        def frame(obj: object) -> bytes:
            return prefix + _dumps(obj) + sep + sep

        try:
            await resp.prepare(request)
            if b.mode in ("overloaded", "validation"):
                message = "Model is overloaded" if b.mode == "overloaded" else "Input validation"
                await resp.write(frame({"error": message, "error_type": b.mode}))
            elif b.mode == "hang":
                await asyncio.sleep(MAX_WAIT_SECONDS)
            elif b.mode == "keepalive_only":
                interval = b.keepalive or 0.2
                deadline = time.monotonic() + MAX_WAIT_SECONDS
                while time.monotonic() < deadline:
                    await resp.write(keep_alive)
                    await asyncio.sleep(interval)
            elif b.mode in ("normal", "slow_first"):
                if b.mode == "slow_first":
                    await _wait(resp, b.first_delay, b.keepalive, keep_alive)
                await self._tokens(resp, frame, body["inputs"], params, b)
            else:  # faults after a few tokens
                for i in range(b.after):
                    if b.delay:
                        await asyncio.sleep(b.delay)
                    await resp.write(frame(_token_event(i)))
                if b.mode == "error_mid_stream":
                    message = "Request failed during generation: fake"
                    await resp.write(frame({"error": message, "error_type": "generation"}))
                elif b.mode == "malformed":
                    await resp.write(prefix + b'{"index":99,"token":{"id":' + sep + sep)
                elif b.mode == "drop":
                    await asyncio.sleep(DROP_PAUSE_SECONDS)
                    _reset(request)
                    return resp
            await resp.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            # aiohttp cancels the handler when the client goes away (handler_cancellation).
            self.stats.disconnects += 1
            raise
        self.stats.completed += 1
        return resp

    async def _tokens(
        self,
        resp: web.StreamResponse,
        frame: Any,
        inputs: str,
        params: dict[str, Any],
        b: Behaviour,
    ) -> None:
        n = _token_count(params, b)
        top_n = int(params.get("top_n_tokens") or 0)
        pending: list[bytes] = []
        due = time.monotonic()
        for i in range(n):
            wait = b.ttft if i == 0 and b.ttft is not None else b.delay
            if b.lockstep and b.delay:
                due = _next_step(due, wait if i == 0 else b.delay, b.delay)
                await asyncio.sleep(due - time.monotonic())
            elif wait:
                await asyncio.sleep(wait)
            event = _token_event(i, top_n)
            if i == n - 1:
                text = "".join(f"t{j} " for j in range(n))
                if params.get("return_full_text"):
                    text = inputs + text
                event["generated_text"] = text
                if params.get("details"):
                    event["details"] = {
                        "finish_reason": "length",
                        "generated_tokens": n,
                        "seed": params.get("seed") if params.get("do_sample") else None,
                        "input_length": len(inputs.split()),
                    }
            pending.append(frame(event))
            if len(pending) >= b.batch or i == n - 1:
                await resp.write(b"".join(pending))
                pending.clear()
                if not b.delay and i % 64 == 63:
                    await asyncio.sleep(0)  # let disconnects and other requests through


def _next_step(previous: float, wait: float, step: float) -> float:
    """The first step boundary (a multiple of `step` on the monotonic clock) at least `wait`
    after `previous`, and not in the past: a stream that fell behind joins the next step."""
    earliest = max(previous + wait, time.monotonic())
    # The small slack keeps a boundary computed as k*step from rounding up to (k+1)*step.
    return math.ceil(earliest / step - 1e-9) * step


def _token_count(params: dict[str, Any], b: Behaviour) -> int:
    n = params.get("max_new_tokens")
    return max(int(n), 1) if isinstance(n, int) else b.tokens


def _token_event(i: int, top_n: int = 0) -> dict[str, Any]:
    return {
        "index": i + 1,
        "token": {"id": i, "text": f"t{i} ", "logprob": -0.5, "special": False},
        "top_tokens": [
            {"id": j, "text": f"t{j} ", "logprob": -1.0 - j, "special": False} for j in range(top_n)
        ],
        "generated_text": None,
        "details": None,
    }


async def _wait(resp: web.StreamResponse, seconds: float, keepalive: float, ka: bytes) -> None:
    """Sleep, with a keep-alive comment every `keepalive` seconds if it is set."""
    deadline = time.monotonic() + min(seconds, MAX_WAIT_SECONDS)
    while (left := deadline - time.monotonic()) > 0:
        if keepalive:
            await asyncio.sleep(min(keepalive, left))
            if deadline - time.monotonic() > 0:
                await resp.write(ka)
        else:
            await asyncio.sleep(left)


def _reset(request: web.Request) -> None:
    """Close the connection abruptly: a TCP reset, as from a crashed or killed server."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error_response(
    status: int, message: str, error_type: str | None, *, as_json: bool
) -> web.Response:
    if not as_json:
        return web.Response(
            status=status,
            text=f"<html><body>{status} {message}</body></html>",
            content_type="text/html",
        )
    body: dict[str, Any] = {"error": message}
    if error_type is not None:
        body["error_type"] = error_type
    return web.json_response(body, status=status)


FAKE = web.AppKey("fake", FakeTGI)
"""The app's handlers and counters."""


def create_app(default: Behaviour) -> web.Application:
    """The fake's aiohttp application."""
    fake = FakeTGI(default)
    app = web.Application()
    app[FAKE] = fake
    app.router.add_get("/info", fake.info)
    app.router.add_get("/health", fake.health)
    app.router.add_get("/stats", fake.get_stats)
    app.router.add_get("/metrics", fake.metrics)
    app.router.add_post("/generate_stream", fake.generate_stream)
    app.router.add_post("/generate", fake.generate)
    app.router.add_post("/", fake.compat)
    return app


async def _serve(host: str, port: int, default: Behaviour) -> None:
    runner = web.AppRunner(create_app(default), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"fake tgi listening on http://{bound_host}:{bound_port}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--tokens", type=int, default=20, help="tokens without max_new_tokens")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds; 0 = flat out")
    parser.add_argument("--first-delay", type=float, default=1.0, help="slow_first's wait")
    parser.add_argument("--keepalive", type=float, default=0.0, help="comment interval, s")
    parser.add_argument("--fault-after", type=int, default=3, help="tokens before a fault")
    parser.add_argument("--batch", type=int, default=1, help="events per write")
    parser.add_argument("--ttft", type=float, default=None, help="wait before the first token")
    parser.add_argument(
        "--lockstep", action="store_true", help="tokens on a shared clock of --token-delay steps"
    )
    args = parser.parse_args()
    default = Behaviour(
        mode=args.mode,
        tokens=args.tokens,
        delay=args.token_delay,
        first_delay=args.first_delay,
        keepalive=args.keepalive,
        after=args.fault_after,
        batch=max(args.batch, 1),
        ttft=args.ttft,
        lockstep=args.lockstep,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, default))


if __name__ == "__main__":
    main()
