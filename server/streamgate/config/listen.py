"""`listen`: where and how the gRPC server listens (address, message size, keepalive, TLS)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from streamgate.config.base import Port, ReadableFile, Seconds, Section

__all__ = ["KeepaliveConfig", "ListenConfig", "TLSConfig"]


class KeepaliveConfig(Section):
    """HTTP/2 keepalive policy: long quiet streams (a long prefill) must survive client pings."""

    time_seconds: Seconds = 60.0
    """The server pings a connection after this much silence (grpc.keepalive_time_ms)."""
    timeout_seconds: Seconds = 20.0
    """...and closes it if the ping is not answered within this (grpc.keepalive_timeout_ms)."""
    permit_without_calls: bool = True
    """Accept client pings on connections without calls (grpc.keepalive_permit_without_calls)."""
    min_ping_interval_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    """Client pings closer than this count as abuse (grpc.http2.min_recv_ping_interval_without_
    data_ms); clients' keepalive interval must be at least this."""
    max_ping_strikes: Annotated[int, Field(ge=0)] = 0
    """Abusive pings tolerated before GOAWAY (grpc.http2.max_ping_strikes); 0: unlimited."""


class TLSConfig(Section):
    """TLS for the gRPC port; with `client_ca_file`, mutual TLS."""

    cert_file: ReadableFile
    """The server's certificate chain (PEM)."""
    key_file: ReadableFile
    """Its private key (PEM)."""
    client_ca_file: ReadableFile | None = None
    """CA certificates (PEM) that client certificates must chain to."""
    require_client_cert: bool | None = None
    """Refuse clients without a valid certificate; default: true when client_ca_file is set."""

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> Self:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file")
        return self

    @property
    def mutual(self) -> bool:
        """Client certificates are required."""
        if self.require_client_cert is None:
            return self.client_ca_file is not None
        return self.require_client_cert


class ListenConfig(Section):
    """Where and how the gRPC server listens."""

    host: str = "127.0.0.1"
    port: Port = 50051
    """0: any free port (printed in the `listening on` line)."""
    max_message_bytes: Annotated[int, Field(ge=1024, le=2**31 - 1)] = 4 * 1024 * 1024
    """Largest request and response message; also bounds the prompt (limits.max_prompt_chars)."""
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 1024
    """HTTP/2 streams (calls) per client connection (grpc.max_concurrent_streams)."""
    keepalive: KeepaliveConfig = Field(default_factory=KeepaliveConfig)
    tls: TLSConfig | None = None
    """null: plaintext (local use)."""
