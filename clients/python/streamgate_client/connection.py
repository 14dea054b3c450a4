"""What `Client` and `AsyncClient` share: the target, TLS credentials, the metadata and deadline
of every call, and the preparation of each RPC. The two clients only open their channel and do
the I/O, blocking or awaited.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from streamgate_client.metadata import MetadataLike, metadata_pairs
from streamgate_client.requests import CallOptions, GenerateOptions, fill_request
from streamgate_client.v1 import generation_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where a gateway listens by default (`streamgate serve`)."""

ChannelOptions: TypeAlias = list[tuple[str, int | str]]
_Request = TypeVar("_Request", bound=Message)


def tls_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files: `ca_file` to trust (default: the system's roots), and a
    client certificate and key for a gateway that requires mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as file:
            return file.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )


@dataclass(frozen=True, slots=True)
class PreparedCall(Generic[_Request]):
    """One RPC ready to send: its request message and how to send it."""

    request: _Request
    timeout: float | None
    metadata: tuple[tuple[str, str], ...]
    request_id: str | None
    """The `x-request-id` sent, if any: an error names it when the server names none."""


class ClientBase(ABC):
    """The settings of a client and every RPC's preparation; subclasses open the channel."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        tls: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, int | str]] | None = None,
    ) -> None:
        """Connect to `target`; the arguments are described on `Client`."""
        self.target = target
        self.timeout = timeout
        pairs = metadata_pairs(metadata)
        if api_key:
            pairs.insert(0, ("authorization", f"Bearer {api_key}"))
        self._metadata = tuple(pairs)
        credentials = credentials or (grpc.ssl_channel_credentials() if tls else None)
        self._connect(target, credentials, list(options or ()))

    @abstractmethod
    def _connect(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions
    ) -> None:
        """Open the channel (secure when there are `credentials`) and the service's stub."""

    def _stream_call(
        self, prompt: str | None, options: GenerateOptions
    ) -> PreparedCall[pb.GenerateStreamRequest]:
        return self._prepare(fill_request(pb.GenerateStreamRequest(), prompt, options), options)

    def _unary_call(
        self, prompt: str | None, options: GenerateOptions
    ) -> PreparedCall[pb.GenerateRequest]:
        return self._prepare(fill_request(pb.GenerateRequest(), prompt, options), options)

    def _models_call(
        self, timeout: float | None, metadata: MetadataLike | None
    ) -> PreparedCall[pb.ListModelsRequest]:
        return self._prepare(pb.ListModelsRequest(), {"timeout": timeout, "metadata": metadata})

    def _prepare(self, request: _Request, options: CallOptions) -> PreparedCall[_Request]:
        timeout = options.get("timeout")
        pairs = [*self._metadata, *metadata_pairs(options.get("metadata"))]
        request_id = options.get("request_id") or None
        if request_id:
            pairs.append(("x-request-id", request_id))
        return PreparedCall(
            request, self.timeout if timeout is None else timeout, tuple(pairs), request_id
        )
