"""The asyncio client: `AsyncClient` and the `AsyncStream` of one `GenerateStream` call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Self, Unpack

import grpc
import grpc.aio

from streamgate_client.connection import ChannelOptions, ClientBase
from streamgate_client.errors import error_from_rpc
from streamgate_client.events import (
    Generation,
    ModelInfo,
    StreamEvent,
    event_from_proto,
    generation_from_proto,
    models_from_proto,
)
from streamgate_client.metadata import MetadataLike, metadata_dict
from streamgate_client.requests import GenerateOptions
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from streamgate_client.v1.generation_pb2_grpc import GenerationServiceAsyncStub


class AsyncStream(AsyncIterator[StreamEvent]):
    """The events of one `GenerateStream` call (asyncio). Iterate it with `async for`;
    `await aclose()` (or leaving its `async with` block) cancels the call."""

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[pb.GenerateStreamRequest, pb.GenerateStreamResponse],
        request_id: str | None,
    ) -> None:
        self._call = call
        self._request_id = request_id
        self._finished = False

    async def __anext__(self) -> StreamEvent:
        while not self._finished:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as err:
                self._finished = True
                raise error_from_rpc(err, self._request_id) from err
            except asyncio.CancelledError:
                if self._finished:  # aclose() from another task cancelled the call
                    break
                raise
            if not isinstance(response, pb.GenerateStreamResponse):  # grpc.aio.EOF
                self._finished = True
                break
            event = event_from_proto(response)
            if event is not None:
                return event
        raise StopAsyncIteration

    async def initial_metadata(self) -> dict[str, str]:
        """The gateway's response headers (x-request-id, x-route, x-backend, x-cache-status)."""
        return metadata_dict(await self._call.initial_metadata())

    async def aclose(self) -> None:
        """Cancel the call if it is still running (the gateway stops generating)."""
        if not self._finished:
            self._finished = True
            self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient(ClientBase):
    """An asyncio client over one `grpc.aio` channel; use it as an async context manager (or
    `await close()`). Create it inside the event loop that uses it. Arguments as `Client`."""

    _channel: grpc.aio.Channel
    _stub: GenerationServiceAsyncStub

    def _connect(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials
            else grpc.aio.insecure_channel(target, options)
        )
        self._stub = pb_grpc.GenerationServiceStub(self._channel)

    def generate_stream(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> AsyncStream:
        """Start a generation and return its events (`async for`); see `Client.generate_stream`."""
        call = self._stream_call(prompt, options)
        return AsyncStream(
            self._stub.GenerateStream(call.request, timeout=call.timeout, metadata=call.metadata),
            call.request_id,
        )

    async def generate(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> Generation:
        """Generate and return the whole result (the unary `Generate` call)."""
        call = self._unary_call(prompt, options)
        rpc = self._stub.Generate(call.request, timeout=call.timeout, metadata=call.metadata)
        try:
            response = await rpc
            headers = metadata_dict(await rpc.initial_metadata())
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err, call.request_id) from err
        return generation_from_proto(response, headers)

    async def list_models(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> list[ModelInfo]:
        """The routes the gateway serves."""
        call = self._models_call(timeout, metadata)
        try:
            response = await self._stub.ListModels(
                call.request, timeout=call.timeout, metadata=call.metadata
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from err
        return models_from_proto(response)

    async def close(self) -> None:
        """Close the channel (cancelling calls still running on it)."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
