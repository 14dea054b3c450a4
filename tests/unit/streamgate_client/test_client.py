"""streamgate_client.client: the sync `Client` and its `Stream` against the stub service.

The sync client runs in a worker thread (`run_sync`) so the stub keeps serving in the loop.
"""

from __future__ import annotations

import asyncio

import pytest

from streamgate_client import Client, StreamDelta, StreamEvent, UnavailableError
from streamgate_client.v1 import generation_pb2 as pb
from support.stub_generation import (
    EXPECTED_EVENTS,
    EXPECTED_GENERATION,
    EXPECTED_MODELS,
    EXPECTED_START,
    WAIT,
    Stub,
    request_of,
    run_sync,
)


async def test_sync_stream_yields_typed_events(stub: Stub) -> None:
    def work(client: Client) -> tuple[list[StreamEvent], dict[str, str]]:
        with client.generate_stream("hello world") as stream:
            return list(stream), stream.initial_metadata()

    events, headers = await run_sync(stub, work)
    assert events == EXPECTED_EVENTS
    assert headers["x-route"] == "default"
    assert headers["x-cache-status"] == "miss"


async def test_generate_returns_the_whole_result(stub: Stub) -> None:
    assert await run_sync(stub, lambda c: c.generate("hello world")) == EXPECTED_GENERATION
    assert isinstance(request_of(stub), pb.GenerateRequest)


async def test_list_models(stub: Stub) -> None:
    assert await run_sync(stub, lambda c: c.list_models(), api_key="k") == EXPECTED_MODELS
    assert stub.servicer.metadata[0]["authorization"] == "Bearer k"


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

    seen, after = await run_sync(stub, work)
    assert seen == [EXPECTED_START, StreamDelta("a")]
    assert after == []


def test_unreachable_gateway_is_unavailable(unused_port: int) -> None:
    with Client(f"127.0.0.1:{unused_port}", timeout=WAIT) as client:
        with pytest.raises(UnavailableError) as caught:
            client.list_models()
        assert caught.value.details == ()
        with pytest.raises(UnavailableError):
            list(client.generate_stream("hi"))
