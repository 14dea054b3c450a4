"""A stub `GenerationService` for the Python client's tests, on a real grpc.aio server.

It picks its behaviour from the prompt (or the last chat message): echo the words, abort with a
status and google.rpc details built by grpcio-status, fail mid-stream, or hang until cancelled.
It runs in the test's event loop on 127.0.0.1 (port 0); sync clients and the CLI run in a worker
thread (`run_sync`, `asyncio.to_thread`) so the server keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from streamgate_client import (
    Client,
    Generation,
    ModelInfo,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Timings,
    Usage,
)
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

__all__ = [
    "DOMAIN",
    "EXPECTED_END",
    "EXPECTED_EVENTS",
    "EXPECTED_GENERATION",
    "EXPECTED_MODELS",
    "EXPECTED_START",
    "WAIT",
    "Stub",
    "StubGeneration",
    "error_info",
    "request_of",
    "run_sync",
    "serve_stub",
]

DOMAIN = "streamgate.dev"
WAIT = 30.0  # a bound on waiting for the stub to notice something, never an assertion on time
HEADERS = (
    ("x-request-id", "req-header"),
    ("x-route", "default"),
    ("x-backend", "stub-0"),
    ("x-cache-status", "miss"),
)
START = pb.Start(
    request_id="req-1",
    model="tiny-model",
    route="default",
    backend="stub-0",
    cache_status=pb.CACHE_STATUS_MISS,
    input_tokens=3,
    seed=0,
)

_Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
_T = TypeVar("_T")


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> grpc.Status:
    """A status whose google.rpc details travel in `grpc-status-details-bin` (grpcio-status)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    """An ErrorInfo of the stub's domain."""
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


INVALID = rich_status(
    grpc.StatusCode.INVALID_ARGUMENT,
    "2 invalid fields",
    error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="stopping.max_new_tokens", description="must be at least 1"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="sampling.top_p", description="must be in (0, 1]"
            ),
        ]
    ),
    error_info("INVALID_FIELD", request_id="req-err"),
)
EXHAUSTED = rich_status(
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "rate limit reached",
    error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)),
    error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject="tenant:acme", description="60 requests per minute"
            )
        ]
    ),
    error_info("RATE_LIMITED", request_id="req-err", route="default"),
)
MIDSTREAM = rich_status(
    grpc.StatusCode.UNAVAILABLE,
    "backend failed after tokens were sent",
    error_info("BACKEND_STREAM_BROKEN", backend="stub-0", tokens_sent="2", request_id="req-1"),
)
# A detail type this client does not decode, and an ErrorInfo without request_id: the id must
# then come from the x-request-id header.
ODD_DETAIL = rich_status(
    grpc.StatusCode.INTERNAL,
    "odd",
    pb.Usage(prompt_tokens=7),
    error_info("ODD"),
)
PLAIN = {
    code.name: rich_status(code, f"plain {code.name.lower()}", error_info(code.name))
    for code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
}
ABORTS = {"invalid": INVALID, "exhausted": EXHAUSTED, "odd": ODD_DETAIL} | PLAIN


def _text_of(request: pb.GenerateStreamRequest | pb.GenerateRequest) -> str:
    if request.WhichOneof("input") == "chat":
        return request.chat.messages[-1].content if request.chat.messages else ""
    return request.prompt


def _reply_words(request: pb.GenerateStreamRequest | pb.GenerateRequest) -> list[str]:
    if request.WhichOneof("input") == "chat":  # says how much history arrived
        users = sum(m.role == "user" for m in request.chat.messages)
        return ["turn", f" {users}"]
    return [f"{w} " for w in request.prompt.split()]


def _tokens(
    request: pb.GenerateStreamRequest | pb.GenerateRequest, i: int, text: str
) -> list[pb.Token]:
    if not (request.response.tokens or request.response.top_n_tokens):
        return []
    top = [pb.TopToken(id=i, text=text, logprob=-0.5)][: request.response.top_n_tokens]
    return [pb.Token(id=i, text=text, logprob=-0.5, special=False, top_tokens=top)]


def _end(completion_tokens: int) -> pb.End:
    return pb.End(
        finish_reason=pb.FINISH_REASON_LENGTH,
        usage=pb.Usage(prompt_tokens=3, completion_tokens=completion_tokens),
        timings=pb.Timings(
            queue_seconds=0.001,
            time_to_first_token_seconds=0.01,
            total_seconds=0.02,
            gateway_overhead_seconds=0.0005,
        ),
    )


async def _abort(context: _Ctx, status: grpc.Status) -> NoReturn:
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclass
class StubGeneration(pb_grpc.GenerationServiceServicer):
    """Records requests and metadata; sets `cancelled` when a "hang" call is cancelled."""

    requests: list[pb.GenerateStreamRequest | pb.GenerateRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def _begin(
        self, request: pb.GenerateStreamRequest | pb.GenerateRequest, context: _Ctx
    ) -> str:
        self.requests.append(request)
        self.metadata.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        await context.send_initial_metadata(HEADERS)
        text = _text_of(request)
        if text in ABORTS:
            await _abort(context, ABORTS[text])
        return text

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: _Ctx
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        text = await self._begin(request, context)
        yield pb.GenerateStreamResponse(start=START)
        if text in ("midstream", "hang"):
            try:
                yield pb.GenerateStreamResponse(delta=pb.Delta(text="a"))
                yield pb.GenerateStreamResponse(delta=pb.Delta(text="b"))
                if text == "midstream":
                    await _abort(context, MIDSTREAM)
                await asyncio.Event().wait()  # until the client goes away
            finally:
                # A hanging call ends only when the client cancels it. grpc.aio interrupts the
                # handler with CancelledError at an await or GeneratorExit at a yield, and
                # context.cancelled() stays False, so the end itself is the signal.
                if text == "hang":
                    self.cancelled.set()
        words = _reply_words(request)
        for i, word in enumerate(words):
            tokens = _tokens(request, i, word)
            yield pb.GenerateStreamResponse(delta=pb.Delta(text=word, tokens=tokens))
        yield pb.GenerateStreamResponse(end=_end(len(words)))

    async def Generate(self, request: pb.GenerateRequest, context: _Ctx) -> pb.GenerateResponse:
        await self._begin(request, context)
        words = _reply_words(request)
        # Start without backend: the client falls back to the x-backend header.
        start = pb.Start()
        start.CopyFrom(START)
        start.backend = ""
        tokens = [t for i, w in enumerate(words) for t in _tokens(request, i, w)]
        return pb.GenerateResponse(
            start=start, text="".join(words), tokens=tokens, end=_end(len(words))
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: _Ctx
    ) -> pb.ListModelsResponse:
        self.metadata.append(
            {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        )
        return pb.ListModelsResponse(
            models=[
                pb.Model(
                    name="default",
                    default=True,
                    backend_models=["tiny-model"],
                    max_input_tokens=256,
                    max_total_tokens=512,
                ),
                pb.Model(name="big", backend_models=["a", "b"]),
            ]
        )


@dataclass
class Stub:
    """The stub server's address and its servicer (what it received)."""

    target: str
    servicer: StubGeneration


@asynccontextmanager
async def serve_stub() -> AsyncIterator[Stub]:
    """Serve a `StubGeneration` on a free loopback port for the duration of the block."""
    servicer = StubGeneration()
    server = grpc.aio.server()
    pb_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Stub(f"127.0.0.1:{port}", servicer)
    finally:
        await server.stop(None)


async def run_sync(stub: Stub, work: Callable[[Client], _T], **kwargs: Any) -> _T:
    """Run `work(client)` with a sync Client in a worker thread (the server keeps serving)."""

    def run() -> _T:
        with Client(stub.target, **kwargs) as client:
            return work(client)

    return await asyncio.to_thread(run)


def request_of(stub: Stub) -> pb.GenerateStreamRequest | pb.GenerateRequest:
    """The last request the stub received."""
    return stub.servicer.requests[-1]


EXPECTED_START = StreamStart(
    request_id="req-1",
    model="tiny-model",
    route="default",
    backend="stub-0",
    cache_status="miss",
    input_tokens=3,
    seed=0,
)
EXPECTED_END = StreamEnd(
    finish_reason="length",
    usage=Usage(prompt_tokens=3, completion_tokens=2, cached_prompt_tokens=0),
    timings=Timings(0.001, 0.01, 0.02, 0.0005),
)
EXPECTED_EVENTS: list[StreamEvent] = [
    EXPECTED_START,
    StreamDelta("hello "),
    StreamDelta("world "),
    EXPECTED_END,
]
"""The stream of the prompt "hello world"."""
EXPECTED_GENERATION = Generation(
    text="hello world ",
    finish_reason="length",
    usage=EXPECTED_END.usage,
    timings=EXPECTED_END.timings,
    request_id="req-1",
    route="default",
    backend="stub-0",  # from x-backend: the stub's Start leaves it empty
    model="tiny-model",
    cache_status="miss",
    seed=0,
)
"""The unary result of the prompt "hello world"."""
EXPECTED_MODELS = [
    ModelInfo("default", True, ("tiny-model",), 256, 512),
    ModelInfo("big", False, ("a", "b"), 0, 0),
]
"""What `list_models()` returns from the stub."""
