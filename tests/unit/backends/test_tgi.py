"""The TGI adapter against a small in-process server: how a stream ends and what it leaves.

The fault matrix against a separate fake TGI process, and the real engine, are in
tests/integration/test_tgi_adapter.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from streamgate.backends import BackendError, BackendInfo, GenerateParameters, TGIBackend
from streamgate.config import BackendConfig
from streamgate.tgi import StreamEvent, sse_event

WAIT = 10.0  # bound on waiting for the server to notice something


def _event(i: int, final: bool = False) -> bytes:
    token = {"id": i, "text": f"t{i} ", "logprob": -0.5, "special": False}
    event: dict[str, object] = {"index": i + 1, "token": token, "top_tokens": []}
    if final:
        event["generated_text"] = "".join(f"t{j} " for j in range(i + 1))
        event["details"] = {"finish_reason": "length", "generated_tokens": i + 1, "seed": None}
    return sse_event(event)


@dataclass
class Server:
    """Streams by the request's `inputs`: `done` (3 tokens and an OpenAI `[DONE]`), `json`
    (a JSON answer with HTTP 200), `endless` (a token every 10 ms until the client leaves)."""

    url: str = ""
    bodies: list[dict[str, object]] = field(default_factory=list)
    request_ids: list[str | None] = field(default_factory=list)
    peers: set[object] = field(default_factory=set)
    left: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.request_ids.append(request.headers.get("x-request-id"))
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        if body["inputs"] == "json":
            return web.json_response({"generated_text": "not a stream"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            if body["inputs"] == "done":
                await response.write(_event(0) + _event(1) + _event(2, final=True))
                await response.write(b"data:[DONE]\n\n")
            else:
                for i in range(100_000):
                    await response.write(_event(i))
                    await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            self.left.set()
            raise
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_post("/generate_stream", srv.generate_stream)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    srv.url = f"http://{host}:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend(server: Server) -> AsyncIterator[TGIBackend]:
    async with TGIBackend.for_url(server.url, name="local") as b:
        yield b


async def waiting_inside(stream: AsyncIterator[StreamEvent]) -> asyncio.Future[StreamEvent]:
    """A task that waits inside the stream for the next read (not served from a buffer)."""
    while True:
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        if not task.done():
            return task
        await task


# ---- construction ---------------------------------------------------------------------------


def test_built_from_its_config_section() -> None:
    config = BackendConfig(name="b1", url="http://10.0.0.5:8080/tgi/", idle_timeout_seconds=9)
    backend = TGIBackend(config)
    assert (backend.name, backend.url, backend.config) == ("b1", "http://10.0.0.5:8080/tgi", config)
    for_url = TGIBackend.for_url("http://h:1", max_connections=3)
    assert (for_url.name, for_url.config.max_connections) == ("http://h:1", 3)


async def test_unstarted_backend_refuses_to_stream() -> None:
    backend = TGIBackend.for_url("http://127.0.0.1:1")
    with pytest.raises(RuntimeError):
        backend.generate_stream("x")
    assert not await backend.health()


def test_info_tolerates_missing_and_extra_fields() -> None:
    info = BackendInfo.from_json({"model_id": "m", "max_input_length": 10, "new_field": [1]})
    assert info.model_id == "m" and info.max_input_tokens == 10
    assert info.max_total_tokens is None and info.model_sha is None
    assert info.raw["new_field"] == [1]
    with pytest.raises(ValueError):
        BackendInfo.from_json({"max_total_tokens": 5})


# ---- streams ----------------------------------------------------------------------------------


async def test_request_body_and_done_terminator(server: Server, backend: TGIBackend) -> None:
    params = GenerateParameters(max_new_tokens=3, stop=("\n",))
    stream = backend.generate_stream("done", params, request_id="r-7")
    events = [e async for e in stream]
    assert [e.token.text for e in events] == ["t0 ", "t1 ", "t2 "] and events[-1].final
    # Only what is set, and details always: the last event must carry the finish reason.
    assert server.bodies == [
        {"inputs": "done", "parameters": {"max_new_tokens": 3, "stop": ["\n"], "details": True}}
    ]
    assert server.request_ids == ["r-7"]
    # Read to its end: the connection went back to the pool and carries the next request.
    assert len([e async for e in backend.generate_stream("done")]) == 3
    assert len(server.peers) == 1


async def test_a_json_answer_is_not_a_stream(backend: TGIBackend) -> None:
    with pytest.raises(BackendError) as caught:
        await anext(backend.generate_stream("json"))
    err = caught.value
    assert (err.kind, err.status, err.retryable, err.tokens_received) == ("protocol", 200, False, 0)
    assert "instead of a stream" in err.message


async def test_nothing_is_sent_before_the_first_read(server: Server, backend: TGIBackend) -> None:
    stream = backend.generate_stream("done")
    await asyncio.sleep(0.05)
    assert not server.bodies
    await stream.aclose()  # never started: nothing to close
    assert not server.bodies


async def test_aclosing_closes_the_connection(server: Server, backend: TGIBackend) -> None:
    async with contextlib.aclosing(backend.generate_stream("endless")) as stream:
        async for event in stream:
            if event.index == 3:
                break
    await asyncio.wait_for(server.left.wait(), WAIT)


async def test_cancelling_the_reader_closes_the_connection(
    server: Server, backend: TGIBackend
) -> None:
    stream = backend.generate_stream("endless")
    await asyncio.create_task(anext(stream))
    waiting = await waiting_inside(stream)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait_for(server.left.wait(), WAIT)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)  # a cancelled stream is over


async def test_first_event_in_one_task_the_rest_in_another_closed_from_a_third(
    server: Server, backend: TGIBackend
) -> None:
    # The gateway's shape: open and wait for the first token; a reader task takes the rest;
    # the call's own task ends it by cancelling the reader, then closing the stream.
    stream = backend.generate_stream("endless")
    first = await asyncio.create_task(anext(stream))
    seen = [first.index]
    three = asyncio.Event()

    async def read_rest() -> None:
        async for event in stream:
            seen.append(event.index)
            if len(seen) == 3:
                three.set()

    reader = asyncio.create_task(read_rest())
    await asyncio.wait_for(three.wait(), WAIT)

    async def close() -> None:
        reader.cancel()
        await asyncio.wait({reader})
        await stream.aclose()

    await asyncio.create_task(close())
    assert reader.cancelled() and seen[:3] == [1, 2, 3]
    await asyncio.wait_for(server.left.wait(), WAIT)
    await stream.aclose()  # idempotent


async def test_a_stream_may_not_be_closed_while_another_task_reads_it(
    backend: TGIBackend,
) -> None:
    # What the docstring asks callers to avoid: Python refuses, the reader keeps the stream.
    stream = backend.generate_stream("endless")
    await anext(stream)
    reader = await waiting_inside(stream)
    with pytest.raises(RuntimeError):
        await stream.aclose()
    reader.cancel()
    await asyncio.wait({reader})
    await stream.aclose()


def test_sent_body_is_json() -> None:
    # What aiohttp's json= posts: the parameters' JSON is plain JSON types.
    body = {"inputs": "x", "parameters": GenerateParameters(stop=("a",), seed=1).to_json()}
    assert json.loads(json.dumps(body)) == body
