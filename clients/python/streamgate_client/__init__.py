"""A small typed Python client for streamgate's `GenerationService`, sync and asyncio.

    from streamgate_client import Client, StreamDelta, StreamEnd

    with Client("127.0.0.1:50051", api_key="sk-...") as client:
        with client.generate_stream("Once upon a time", max_new_tokens=32) as stream:
            for event in stream:
                if isinstance(event, StreamDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, StreamEnd):
                    print(f"\\n{event.finish_reason}, {event.usage.completion_tokens} tokens")

`AsyncClient` has the same methods over `grpc.aio` (`async for`, `await`). A stream yields frozen
dataclasses: one `StreamStart`, a `StreamDelta` per model step, one `StreamEnd`. Closing a stream
(`close()`, leaving its `with` block) cancels the call, and the gateway cancels the generation.

A non-OK status is raised as a `StreamgateError` subclass carrying the decoded google.rpc details
(reason, metadata, retry delay, field violations, tokens already sent, request id). Unset optional
parameters are left unset in the request, so the route's/backend's defaults apply; 0 is sent as
a real value.

Modules: `events` (what a call returns), `errors`, `requests` (options → request message),
`connection` (what both clients share), `client` (sync), `aio` (asyncio), `cli` (the
`generate | chat | models` commands), and `v1`, the generated `streamgate.v1` code.
"""

from streamgate_client.aio import AsyncClient, AsyncStream
from streamgate_client.client import Client, Stream
from streamgate_client.connection import DEFAULT_TARGET, tls_credentials
from streamgate_client.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StreamgateError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
)
from streamgate_client.events import (
    Generation,
    ModelInfo,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Timings,
    Token,
    TopToken,
    Usage,
    event_from_proto,
)
from streamgate_client.metadata import MetadataLike
from streamgate_client.requests import CallOptions, GenerateOptions, RequestOptions, build_request

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "AsyncClient",
    "AsyncStream",
    "CallOptions",
    "Client",
    "DeadlineExceededError",
    "GenerateOptions",
    "Generation",
    "InternalError",
    "InvalidArgumentError",
    "MetadataLike",
    "ModelInfo",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestOptions",
    "ResourceExhaustedError",
    "Stream",
    "StreamDelta",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "StreamgateError",
    "Timings",
    "Token",
    "TopToken",
    "UnauthenticatedError",
    "UnavailableError",
    "Usage",
    "build_request",
    "error_from_rpc",
    "event_from_proto",
    "tls_credentials",
]
