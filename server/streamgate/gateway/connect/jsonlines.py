"""`GenerateStream` as JSON lines, for curl and scripts that read a stream line by line.

    curl -N -H 'content-type: application/json' -d '{"prompt": "Hello"}' \\
        http://127.0.0.1:8080/streamgate.v1.GenerationService/GenerateStream

The request is Connect's JSON without the envelope (a streaming Connect call would frame it);
the answer is `application/x-ndjson`: one `GenerateStreamResponse` per line, in the same proto
JSON as Connect's, written as each event arrives. A failure before the first line is answered
like a Connect unary error (its HTTP status, the error as JSON); a failure after it is the last
line, `{"error": {...}}` (the shape of Connect's end-of-stream message). The call goes through
the same door (door.py) as every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.message import Message

from streamgate.gateway.connect.asgi import (
    Receive,
    Scope,
    Send,
    encode_headers,
    header,
    request_headers,
    respond,
)
from streamgate.gateway.connect.door import Door, Serving
from streamgate.gateway.connect.errors import error_json, http_status
from streamgate.gateway.messages import initial_metadata, stream_message
from streamgate.gateway.pipeline.errors import GatewayError, Reason
from streamgate.gateway.pipeline.events import Start
from streamgate.gateway.pipeline.run import Pipeline
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["JSON_LINES", "JsonLines", "wants_json_lines"]

JSON_LINES = "application/x-ndjson"
_JSON = "application/json"
_TIMEOUT_HEADER = "connect-timeout-ms"
_STREAM_PATH = "/streamgate.v1.GenerationService/GenerateStream"


def wants_json_lines(scope: Scope) -> bool:
    """A POST of unframed JSON to GenerateStream (Connect itself would refuse it: its streams
    are `application/connect+json`)."""
    content_type = header(scope, "content-type").partition(";")[0].strip().lower()
    return scope["path"] == _STREAM_PATH and content_type == _JSON


def _line(message: Message) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode() + b"\n"


class JsonLines:
    """The JSON lines handler (an ASGI app for `wants_json_lines` requests).

    Args:
        door: opens, guards and closes the call.
        pipeline: the generation's stages.
        max_bytes: the largest request body accepted.
    """

    def __init__(self, door: Door, pipeline: Pipeline, max_bytes: int) -> None:
        self._door = door
        self._pipeline = pipeline
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        serving = self._door.open(
            "GenerateStream",
            request_headers(scope),
            peer=f"{client[0]}:{client[1]}" if client else "",
            time_remaining=_timeout(header(scope, _TIMEOUT_HEADER)),
        )
        writer = _Writer(send)
        error: BaseException | None = None
        try:
            body = await _read_body(receive, self._max_bytes)
            if body is None:
                error = asyncio.CancelledError()  # the client left before its request ended
                return
            request = _parse(body)
            async with self._door.guard(serving, request), _disconnect_cancels(receive) as left:
                try:
                    await self._stream(request, serving, writer)
                except asyncio.CancelledError as err:
                    if not left():
                        raise
                    error = err  # the watch cancelled the call: there is no one to answer
                    _uncancel()
        except GatewayError as err:  # the request could not be read
            serving.error = error = err
            await writer.error(serving)
        except ConnectError as err:  # raised by the guard, with serving.error set
            error = err
            await writer.error(serving)
        except BaseException as err:
            error = err
            raise
        finally:
            self._door.close(serving, error)

    async def _stream(
        self, request: pb.GenerateStreamRequest, serving: Serving, writer: _Writer
    ) -> None:
        events = self._pipeline.generate(request, serving.call)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Start):
                    await writer.start(initial_metadata(event))
                await writer.line(_line(stream_message(event)))
        await writer.end()


class _Writer:
    """The response: its headers with the first line, then lines; or an error."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def start(self, metadata: Iterable[tuple[str, str]]) -> None:
        headers = encode_headers([("content-type", JSON_LINES), *metadata])
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        self.started = True

    async def line(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b""})

    async def error(self, serving: Serving) -> None:
        """The failure that `serving` was answered with: the last line, or the whole answer."""
        failure = serving.error
        assert failure is not None  # set with every error this door answers
        if self.started:
            line = json.dumps({"error": error_json(failure, serving.call)}).encode() + b"\n"
            await self._send({"type": "http.response.body", "body": line})
            return
        body = json.dumps(error_json(failure, serving.call)).encode()
        headers = [("content-type", _JSON), ("x-request-id", serving.call.request_id)]
        await respond(self._send, http_status(failure.code), headers, body)


def _timeout(value: str) -> float | None:
    """Connect's `connect-timeout-ms` in seconds (None: absent or not a number of ms)."""
    value = value.strip()
    return int(value) / 1000 if value.isdigit() and len(value) <= 10 else None


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The request body; None if the client left before sending all of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise GatewayError(
                Reason.INVALID_ARGUMENT, f"the request is larger than {max_bytes} bytes"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(body: bytes) -> pb.GenerateStreamRequest:
    request = pb.GenerateStreamRequest()
    try:
        json_format.Parse(body, request)
    except json_format.ParseError as err:
        raise GatewayError(Reason.INVALID_ARGUMENT, f"malformed request: {err}") from None
    return request


@contextlib.asynccontextmanager
async def _disconnect_cancels(receive: Receive) -> AsyncIterator[Callable[[], bool]]:
    """Cancel the running task when the client disconnects (an aborted fetch, curl stopped):
    the pipeline then closes the backend stream, as for a cancelled gRPC call. Yields whether
    that happened."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        message: Any = {}
        while message.get("type") != "http.disconnect":
            message = await receive()
        left = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        yield lambda: left
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
