"""streamgate_client.aio: the asyncio `AsyncClient` and its `AsyncStream` against the stub."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from streamgate_client import (
    AsyncClient,
    DeadlineExceededError,
    StreamDelta,
    Token,
    TopToken,
    UnavailableError,
)
from streamgate_client.v1 import generation_pb2 as pb
from support.stub_generation import (
    EXPECTED_EVENTS,
    EXPECTED_GENERATION,
    EXPECTED_MODELS,
    WAIT,
    Stub,
    request_of,
)


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


async def test_generate_returns_the_whole_result(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        assert await client.generate("hello world") == EXPECTED_GENERATION
    assert isinstance(request_of(stub), pb.GenerateRequest)


async def test_list_models(stub: Stub) -> None:
    async with AsyncClient(stub.target, api_key="k") as client:
        assert await client.list_models() == EXPECTED_MODELS
    assert stub.servicer.metadata[0]["authorization"] == "Bearer k"


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


async def test_unreachable_gateway_is_unavailable(unused_port: int) -> None:
    async with AsyncClient(f"127.0.0.1:{unused_port}", timeout=WAIT) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.list_models()
        assert caught.value.details == ()
        with pytest.raises(UnavailableError):
            await client.generate("hi")
