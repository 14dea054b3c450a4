"""The synchronous client: `Client` and the `Stream` of one `GenerateStream` call."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Self, Unpack

import grpc

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


class Stream(Iterator[StreamEvent]):
    """The events of one `GenerateStream` call (sync). Iterate it; `close()` (or leaving its
    `with` block) cancels the call. Errors are raised as `StreamgateError` while iterating."""

    def __init__(
        self, call: grpc._CallIterator[pb.GenerateStreamResponse], request_id: str | None
    ) -> None:
        self._call = call
        self._request_id = request_id
        self._finished = False
        self._closed = False

    def __next__(self) -> StreamEvent:
        while not self._finished:
            try:
                response = next(self._call)
            except StopIteration:
                self._finished = True
                break
            except grpc.RpcError as err:
                self._finished = True
                if self._closed:  # the CANCELLED status of our own close()
                    break
                raise error_from_rpc(err, self._request_id) from err
            event = event_from_proto(response)
            if event is not None:
                return event
        raise StopIteration

    def initial_metadata(self) -> dict[str, str]:
        """The gateway's response headers (x-request-id, x-route, x-backend, x-cache-status);
        waits for them to arrive."""
        return metadata_dict(self._call.initial_metadata())

    def close(self) -> None:
        """Cancel the call if it is still running (the gateway stops generating)."""
        self._closed = True
        if not self._finished:
            self._finished = True
            self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Client(ClientBase):
    """A synchronous client over one gRPC channel; use it as a context manager (or `close()`).

    Args:
        target: "host:port" of the gateway.
        api_key: sent as `authorization: Bearer <key>` on every call.
        timeout: default deadline of each call in seconds (a stream's whole duration).
        metadata: sent on every call.
        tls: use TLS with the system's root certificates.
        credentials: explicit channel credentials (implies TLS).
        options: gRPC channel options, e.g. [("grpc.max_receive_message_length", 64 << 20)].
    """

    _channel: grpc.Channel
    _stub: pb_grpc.GenerationServiceStub

    def _connect(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials
            else grpc.insecure_channel(target, options)
        )
        self._stub = pb_grpc.GenerationServiceStub(self._channel)

    def generate_stream(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> Stream:
        """Start a generation and return its events as they are produced.

        Options are `RequestOptions` (model, sampling, stopping, response, cache) and
        `CallOptions` (request_id, timeout, metadata). The call starts at once; errors are
        raised while iterating.
        """
        call = self._stream_call(prompt, options)
        return Stream(
            self._stub.GenerateStream(call.request, timeout=call.timeout, metadata=call.metadata),
            call.request_id,
        )

    def generate(self, prompt: str | None = None, **options: Unpack[GenerateOptions]) -> Generation:
        """Generate and return the whole result (the unary `Generate` call)."""
        call = self._unary_call(prompt, options)
        try:
            response, rpc = self._stub.Generate.with_call(
                call.request, timeout=call.timeout, metadata=call.metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err, call.request_id) from err
        return generation_from_proto(response, metadata_dict(rpc.initial_metadata()))

    def list_models(
        self, *, timeout: float | None = None, metadata: MetadataLike | None = None
    ) -> list[ModelInfo]:
        """The routes the gateway serves."""
        call = self._models_call(timeout, metadata)
        try:
            response = self._stub.ListModels(
                call.request, timeout=call.timeout, metadata=call.metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return models_from_proto(response)

    def close(self) -> None:
        """Close the channel (cancelling calls still running on it)."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
