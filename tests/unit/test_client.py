"""streamgate.client and the client CLI commands against a stub GenerationService.

The stub runs on a real grpc.aio server on 127.0.0.1 (port 0) in the test's event loop. It picks
its behaviour from the prompt (or the last chat message): echo the words, abort with a status and
google.rpc details built by grpcio-status, fail mid-stream, or hang until cancelled. Sync clients
and the CLI run in a worker thread (`asyncio.to_thread`) so the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from streamgate import cli
from streamgate.client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    Generation,
    InternalError,
    InvalidArgumentError,
    ModelInfo,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    StreamgateError,
    StreamStart,
    Timings,
    Token,
    TopToken,
    UnauthenticatedError,
    UnavailableError,
    Usage,
    build_request,
)
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc
from support.processes import free_port

DOMAIN = "streamgate.dev"
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
WAIT = 30.0  # a bound on waiting for the stub to notice something, never an assertion on time

_Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
_T = TypeVar("_T")


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> grpc.Status:
    """A status whose google.rpc details travel in `grpc-status-details-bin` (grpcio-status)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
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
    target: str
    servicer: StubGeneration


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    servicer = StubGeneration()
    server = grpc.aio.server()
    pb_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Stub(f"127.0.0.1:{port}", servicer)
    await server.stop(None)


async def _sync(stub: Stub, work: Callable[[Client], _T], **kwargs: Any) -> _T:
    """Run `work(client)` with a sync Client in a worker thread (the server keeps serving)."""

    def run() -> _T:
        with Client(stub.target, **kwargs) as client:
            return work(client)

    return await asyncio.to_thread(run)


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


# --- requests ------------------------------------------------------------------------------------


def test_unset_options_stay_unset() -> None:
    request = build_request("hi")
    assert request.prompt == "hi"
    assert request.model == ""
    for name in ("sampling", "stopping", "response", "cache"):
        assert not request.HasField(name), name


def test_zero_is_sent_as_a_value() -> None:
    request = build_request(
        "hi",
        temperature=0.0,
        top_k=0,
        top_p=0.0,
        typical_p=0.0,
        repetition_penalty=0.0,
        frequency_penalty=0.0,
        seed=0,
        do_sample=False,
        max_new_tokens=0,
        truncate_input_tokens=0,
    )
    decoded = pb.GenerateStreamRequest.FromString(request.SerializeToString())
    for name in (
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "frequency_penalty",
        "seed",
        "do_sample",
    ):
        assert decoded.sampling.HasField(name), name
    assert decoded.stopping.HasField("max_new_tokens")
    assert decoded.stopping.HasField("truncate_input_tokens")


def test_only_given_fields_are_set() -> None:
    request = build_request(
        "hi",
        model="big",
        temperature=0.7,
        stop=["\n\n", "END"],
        top_n_tokens=2,
        cache_mode="bypass",
    )
    assert request.model == "big"
    assert request.sampling.temperature == pytest.approx(0.7)
    assert [f.name for f, _ in request.sampling.ListFields()] == ["temperature"]
    assert list(request.stopping.stop_sequences) == ["\n\n", "END"]
    assert not request.stopping.HasField("max_new_tokens")
    assert request.response.top_n_tokens == 2
    assert request.cache.mode == pb.CACHE_MODE_BYPASS


def test_a_single_stop_string_is_one_sequence() -> None:
    assert list(build_request("hi", stop="END").stopping.stop_sequences) == ["END"]


def test_messages_become_a_chat() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    request = build_request(messages=messages, add_generation_prompt=False)
    assert request.WhichOneof("input") == "chat"
    assert [(m.role, m.content) for m in request.chat.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ]
    assert request.chat.HasField("add_generation_prompt")
    assert not build_request(messages=messages).chat.HasField("add_generation_prompt")
    assert build_request(messages=[]).WhichOneof("input") == "chat"


def test_bad_arguments_fail_before_sending() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        build_request("hi", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="exactly one"):
        build_request()
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        build_request(messages=[{"content": "no role"}])
    with pytest.raises(TypeError, match="max_tokens"):
        build_request("hi", max_tokens=5)  # type: ignore[call-arg]


async def test_request_fields_and_metadata_arrive_as_given(stub: Stub) -> None:
    def work(client: Client) -> object:
        list(client.generate_stream("hi", temperature=0.0, seed=0, do_sample=False))
        list(client.generate_stream("hi", request_id="mine", metadata={"X-User-Id": "u1"}))
        return None

    await _sync(stub, work, api_key="sk-test", metadata=[("x-priority", "high")])
    explicit, bare = stub.servicer.requests
    assert explicit.sampling.HasField("temperature")
    assert explicit.sampling.HasField("seed")
    assert explicit.sampling.HasField("do_sample")
    assert not explicit.sampling.HasField("top_k")
    assert not explicit.HasField("stopping")
    assert not bare.HasField("sampling")
    first, second = stub.servicer.metadata
    assert first["authorization"] == "Bearer sk-test"
    assert first["x-priority"] == "high"
    assert "x-request-id" not in first
    assert second["x-request-id"] == "mine"
    assert second["x-user-id"] == "u1"  # keys are lower-cased
    assert second["authorization"] == "Bearer sk-test"


# --- streaming -----------------------------------------------------------------------------------


async def test_sync_stream_yields_typed_events(stub: Stub) -> None:
    def work(client: Client) -> tuple[list[StreamEvent], dict[str, str]]:
        with client.generate_stream("hello world") as stream:
            return list(stream), stream.initial_metadata()

    events, headers = await _sync(stub, work)
    assert events == EXPECTED_EVENTS
    assert headers["x-route"] == "default"
    assert headers["x-cache-status"] == "miss"


async def test_async_stream_yields_typed_events(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        stream = client.generate_stream("hello world")
        events = [event async for event in stream]
        assert (await stream.initial_metadata())["x-backend"] == "stub-0"
    assert events == EXPECTED_EVENTS


async def test_tokens_and_top_tokens_when_asked(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        events = [e async for e in client.generate_stream("hello world", top_n_tokens=1)]
    deltas = [e for e in events if isinstance(e, StreamDelta)]
    assert deltas[0].tokens == (Token(0, "hello ", -0.5, False, (TopToken(0, "hello ", -0.5),)),)
    assert request_of(stub).response.top_n_tokens == 1


def request_of(stub: Stub) -> pb.GenerateStreamRequest | pb.GenerateRequest:
    return stub.servicer.requests[-1]


async def test_generate_returns_the_whole_result(stub: Stub) -> None:
    expected = Generation(
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
    sync_result = await _sync(stub, lambda c: c.generate("hello world"))
    async with AsyncClient(stub.target) as client:
        async_result = await client.generate("hello world")
    assert sync_result == expected
    assert async_result == expected
    assert isinstance(request_of(stub), pb.GenerateRequest)


async def test_list_models(stub: Stub) -> None:
    expected = [
        ModelInfo("default", True, ("tiny-model",), 256, 512),
        ModelInfo("big", False, ("a", "b"), 0, 0),
    ]
    assert await _sync(stub, lambda c: c.list_models(), api_key="k") == expected
    async with AsyncClient(stub.target) as client:
        assert await client.list_models() == expected
    assert stub.servicer.metadata[0]["authorization"] == "Bearer k"


# --- cancellation --------------------------------------------------------------------------------


async def test_closing_a_sync_stream_cancels_the_call(stub: Stub) -> None:
    loop = asyncio.get_running_loop()

    def work(client: Client) -> tuple[list[StreamEvent], list[StreamEvent]]:
        stream = client.generate_stream("hang")
        seen = [next(stream), next(stream)]
        stream.close()
        # Wait while the channel is still open: closing the channel would cancel the call too.
        wait = asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)
        asyncio.run_coroutine_threadsafe(wait, loop).result()
        return seen, list(stream)  # nothing more, and no CANCELLED error

    seen, after = await _sync(stub, work)
    assert seen == [EXPECTED_START, StreamDelta("a")]
    assert after == []


async def test_leaving_an_async_stream_cancels_the_call(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        async with client.generate_stream("hang") as stream:
            async for event in stream:
                if isinstance(event, StreamDelta):
                    break
        assert [e async for e in stream] == []
        await asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)


async def test_timeout_is_a_deadline(stub: Stub) -> None:
    async with AsyncClient(stub.target, timeout=0.3) as client:
        with pytest.raises(DeadlineExceededError) as caught:
            async for _ in client.generate_stream("hang"):
                pass
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# --- errors --------------------------------------------------------------------------------------


def _check_invalid(err: StreamgateError) -> None:
    assert isinstance(err, InvalidArgumentError)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "2 invalid fields"
    assert err.reason == "INVALID_FIELD"
    assert err.domain == DOMAIN
    assert err.field_violations == [
        ("stopping.max_new_tokens", "must be at least 1"),
        ("sampling.top_p", "must be in (0, 1]"),
    ]
    assert err.request_id == "req-err"  # ErrorInfo's, before the header's
    assert err.retry_delay is None
    assert err.tokens_sent is None
    assert len(err.details) == 2


async def test_invalid_argument_details_sync_stream(stub: Stub) -> None:
    def work(client: Client) -> object:
        try:
            list(client.generate_stream("invalid"))
        except StreamgateError as err:
            return err
        return None

    err = await _sync(stub, work)
    assert isinstance(err, StreamgateError)
    _check_invalid(err)
    assert "\n" not in str(err)
    assert str(err).startswith("INVALID_ARGUMENT INVALID_FIELD: 2 invalid fields")


async def test_invalid_argument_details_sync_unary(stub: Stub) -> None:
    def work(client: Client) -> object:
        try:
            client.generate("invalid")
        except StreamgateError as err:
            return err
        return None

    err = await _sync(stub, work)
    assert isinstance(err, StreamgateError)
    _check_invalid(err)


async def test_invalid_argument_details_async(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(InvalidArgumentError) as from_stream:
            async for _ in client.generate_stream("invalid"):
                pass
        with pytest.raises(InvalidArgumentError) as from_unary:
            await client.generate("invalid")
    _check_invalid(from_stream.value)
    _check_invalid(from_unary.value)


async def test_resource_exhausted_carries_retry_and_quota(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(ResourceExhaustedError) as caught:
            await client.generate("exhausted")
    err = caught.value
    assert err.retry_delay == pytest.approx(1.5)
    assert err.quota_violations == [("tenant:acme", "60 requests per minute")]
    assert err.reason == "RATE_LIMITED"
    assert err.metadata == {"request_id": "req-err", "route": "default"}
    assert "[retry in 1.5 s]" in str(err)


async def test_failure_mid_stream_says_how_many_tokens_were_sent(stub: Stub) -> None:
    seen: list[StreamEvent] = []
    async with AsyncClient(stub.target) as client:
        with pytest.raises(UnavailableError) as caught:
            async for event in client.generate_stream("midstream"):
                seen.append(event)
    assert seen == [EXPECTED_START, StreamDelta("a"), StreamDelta("b")]
    assert caught.value.tokens_sent == 2
    assert caught.value.metadata["backend"] == "stub-0"
    assert caught.value.reason == "BACKEND_STREAM_BROKEN"


async def test_unknown_details_are_kept_and_request_id_falls_back(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(InternalError) as caught:
            await client.generate("odd", request_id="sent-by-client")
    err = caught.value
    assert err.reason == "ODD"
    assert err.request_id == "req-header"  # the server's x-request-id, before the client's
    odd = err.details[0]
    assert isinstance(odd, any_pb2.Any)  # left packed
    assert odd.TypeName() == "streamgate.v1.Usage"


def test_error_line_does_not_repeat_itself() -> None:
    violations = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="sampling.top_p", description="must be in (0, 1]"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="stopping.max_new_tokens", description="must be at least 1"
            ),
        ]
    )
    err = InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad request:\n  sampling.top_p must be in (0, 1]",
        [error_info("INVALID_ARGUMENT", request_id="r-7", tokens_sent="0"), violations],
    )
    assert str(err) == (
        "INVALID_ARGUMENT: bad request: sampling.top_p must be in (0, 1] "
        "(stopping.max_new_tokens: must be at least 1) [request r-7]"
    )
    assert err.tokens_sent == 0


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("NOT_FOUND", NotFoundError),
        ("UNAUTHENTICATED", UnauthenticatedError),
        ("PERMISSION_DENIED", PermissionDeniedError),
        ("FAILED_PRECONDITION", StreamgateError),
    ],
)
async def test_status_codes_map_to_error_classes(
    stub: Stub, prompt: str, kind: type[StreamgateError]
) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(StreamgateError) as caught:
            async for _ in client.generate_stream(prompt):
                pass
    assert type(caught.value) is kind
    assert str(caught.value).startswith(f"{prompt}: plain ")  # reason == code: said once
    assert caught.value.code.name == prompt
    assert caught.value.reason == prompt
    assert caught.value.request_id == "req-header"


def test_unreachable_gateway_is_unavailable(unused_port: int) -> None:
    with Client(f"127.0.0.1:{unused_port}", timeout=WAIT) as client:
        with pytest.raises(UnavailableError) as caught:
            client.list_models()
        assert caught.value.details == ()
        with pytest.raises(UnavailableError):
            list(client.generate_stream("hi"))


@pytest.fixture
def unused_port() -> int:
    return free_port()


# --- CLI -----------------------------------------------------------------------------------------


async def _main(argv: Sequence[str]) -> int:
    """`streamgate ARGV` in a worker thread; its exit code."""
    return await asyncio.to_thread(cli.main, list(argv))


async def test_cli_generate_streams_text_and_stats(
    stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--target", stub.target, "--max-new-tokens", "0", "--seed", "7"]
    assert await _main([*argv, "--stop", "x", "hello world"]) == 0
    out, err = capsys.readouterr()
    assert out == "hello world \n"
    assert err.startswith("[3 prompt + 2 generated tokens | TTFT ")
    assert err.rstrip().endswith("| length]")
    request = request_of(stub)
    assert request.stopping.max_new_tokens == 0
    assert request.stopping.HasField("max_new_tokens")
    assert request.sampling.seed == 7
    assert not request.sampling.HasField("temperature")
    assert list(request.stopping.stop_sequences) == ["x"]


async def test_cli_generate_api_key_from_env(
    stub: Stub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMGATE_API_KEY", "sk-env")
    assert await _main(["generate", "--target", stub.target, "--no-stats", "hi"]) == 0
    assert capsys.readouterr() == ("hi \n", "")
    assert stub.servicer.metadata[-1]["authorization"] == "Bearer sk-env"


async def test_cli_generate_error_is_one_line_and_exits_1(
    stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["generate", "--target", stub.target, "invalid"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("streamgate generate: INVALID_ARGUMENT INVALID_FIELD: ")
    assert "stopping.max_new_tokens: must be at least 1" in err


async def test_cli_generate_error_mid_stream(
    stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["generate", "--target", stub.target, "midstream"]) == 1
    out, err = capsys.readouterr()
    assert out == "ab\n"
    assert err.startswith("streamgate generate: UNAVAILABLE BACKEND_STREAM_BROKEN: ")
    assert "[request req-1]" in err


async def test_cli_chat_keeps_the_conversation(
    stub: Stub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nhow are you?\n"))
    argv = ["chat", "--target", stub.target, "--system", "be brief", "--stats"]
    assert await _main(argv) == 0  # EOF quits
    out, err = capsys.readouterr()
    assert out == "turn 1\nturn 2\n"
    assert err.count("generated tokens") == 2
    first, second = stub.servicer.requests
    assert [(m.role, m.content) for m in second.chat.messages] == [
        ("system", "be brief"),
        ("user", "hello"),
        ("assistant", "turn 1"),
        ("user", "how are you?"),
    ]
    assert len(first.chat.messages) == 2


async def test_cli_chat_exit_command_and_error(
    stub: Stub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n/exit\nnever sent\n"))
    assert await _main(["chat", "--target", stub.target]) == 0
    assert capsys.readouterr().out == "turn 1\n"
    assert len(stub.servicer.requests) == 1

    monkeypatch.setattr("sys.stdin", io.StringIO("exhausted\nnever sent\n"))
    assert await _main(["chat", "--target", stub.target]) == 1  # not a terminal: errors end it
    err = capsys.readouterr().err
    assert err.startswith("streamgate chat: RESOURCE_EXHAUSTED RATE_LIMITED: ")
    assert len(stub.servicer.requests) == 2


async def test_cli_models(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _main(["models", "--target", stub.target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ROUTE", "BACKEND", "MODELS", "MAX", "INPUT", "MAX", "TOTAL"]
    assert lines[1].split() == ["default", "*", "tiny-model", "256", "512"]
    assert lines[2].split() == ["big", "a,b", "-", "-"]


async def test_cli_unreachable_gateway(
    unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["models", "--target", f"127.0.0.1:{unused_port}"]) == 1
    assert capsys.readouterr().err.startswith("streamgate models: UNAVAILABLE")


# Ctrl-C: a real `streamgate` process gets SIGINT once the stub is in the middle of its reply.

_SOURCE_ROOT = Path(__file__).resolve().parents[2] / "server"


async def _interrupted(stub: Stub, argv: Sequence[str], stdin: bytes) -> tuple[int, str, str]:
    """Run `streamgate ARGV`, press Ctrl-C once it has printed the stub's partial reply "ab"
    (the stub then waits for the client to go away), and return (exit code, stdout, stderr)."""
    path = os.pathsep.join(p for p in (str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamgate",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path, "PYTHONIOENCODING": "utf-8"},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(stdin)  # all of it, then EOF: the commands read lines as they go
        process.stdin.close()
        shown = await asyncio.wait_for(process.stdout.readexactly(2), WAIT)
        assert shown == b"ab"
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, (shown + out).decode(), err.decode()


async def test_ctrl_c_cancels_generate(stub: Stub) -> None:
    code, out, err = await _interrupted(stub, ["generate", "--target", stub.target, "hang"], b"")
    assert code == 130, err
    assert out == "ab\n"
    assert "Traceback" not in err
    await asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)


async def test_ctrl_c_stops_a_chat_reply_without_quitting(stub: Stub) -> None:
    argv = ["chat", "--target", stub.target]
    code, out, err = await _interrupted(stub, argv, b"hang\nnext\n")
    assert code == 0, err
    assert "[stopped]" in err
    await asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)
    # The shown part of the stopped reply stays in the conversation; the chat goes on.
    assert out == "ab\nturn 2\n"
    last = stub.servicer.requests[-1]
    assert [(m.role, m.content) for m in last.chat.messages] == [
        ("user", "hang"),
        ("assistant", "ab"),
        ("user", "next"),
    ]
