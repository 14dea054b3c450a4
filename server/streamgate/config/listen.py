"""`listen`: where and how the gRPC server listens (address, message size, keepalive, TLS), and
`listen.http`, the browser endpoint beside it."""

from __future__ import annotations

from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from streamgate.config.base import Port, ReadableFile, Seconds, Section

__all__ = ["HttpConfig", "KeepaliveConfig", "ListenConfig", "TLSConfig"]


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


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(
            f"'{value}' is not an origin: write scheme://host[:port] "
            "(e.g. https://chat.example.com), without a path"
        )
    return value.lower()


Origin = Annotated[str, AfterValidator(_origin)]
"""A web origin, `scheme://host[:port]`, as browsers send it in the Origin header."""


class HttpConfig(Section):
    """The browser endpoint: the same services over Connect, gRPC-Web and JSON lines (HTTP/1.1
    and HTTP/2), and the chat page at `/` (docs/api.md, "Browsers and curl")."""

    enabled: bool = False
    """Off by default: nothing but the gRPC port is open unless asked for."""
    host: str = "127.0.0.1"
    port: Port = 8080
    """0: any free port (printed in the `chat page` line)."""
    cors_origins: list[Origin] = Field(default_factory=list)
    """Pages of these other origins may call the endpoint (CORS). The chat page served here is
    same-origin and needs none; empty: only same-origin pages."""
    tls: TLSConfig | None = None
    """HTTPS (browsers speak HTTP/2 only over TLS); null: plain HTTP (HTTP/2 with prior
    knowledge, e.g. `curl --http2-prior-knowledge`)."""


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
    http: HttpConfig = Field(default_factory=HttpConfig)
    """The browser endpoint (off by default); message size limits as above."""
