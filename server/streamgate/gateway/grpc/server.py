"""The grpc.aio server with deliberate limits (message size, streams, keepalive) and, when
configured, TLS or mutual TLS on its port."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from streamgate.config import ListenConfig, TLSConfig

__all__ = ["create_server", "listen", "server_credentials", "server_options"]


def server_options(config: ListenConfig) -> list[tuple[str, int]]:
    """Channel arguments of the server (documented in docs/operations.md)."""
    ka = config.keepalive
    return [
        # The largest prompt accepted must fit in a request; the default is 4 MiB.
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        # Server pings find dead clients of long quiet streams (a long prefill sends nothing).
        ("grpc.keepalive_time_ms", int(ka.time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(ka.timeout_seconds * 1000)),
        # ...and clients may ping too, also without calls, without being cut off for it
        # (the defaults answer a client ping every < 5 min with GOAWAY too_many_pings).
        ("grpc.keepalive_permit_without_calls", int(ka.permit_without_calls)),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            int(ka.min_ping_interval_seconds * 1000),
        ),
        ("grpc.http2.max_ping_strikes", ka.max_ping_strikes),
        # Server keepalive pings continue on a stream that sends no data.
        ("grpc.http2.max_pings_without_data", 0),
        # Two gateways on one port would split the traffic silently: fail to bind instead.
        ("grpc.so_reuseport", 0),
    ]


def create_server(
    config: ListenConfig, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """A grpc.aio server with the limits of `config` and `interceptors` (first is outermost);
    services are added by the caller."""
    return grpc.aio.server(interceptors=interceptors, options=server_options(config))


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """TLS credentials from the configured PEM files (read once, at start)."""
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=tls.mutual,
    )


def listen(server: grpc.aio.Server, config: ListenConfig) -> str:
    """Bind the port (with TLS when configured); returns `host:port` (the real port when 0
    was asked).

    gRPC checks certificates and keys when the port is bound: a file that is not PEM, or a key
    that does not match its certificate, fails here (OSError) rather than at the first call.
    """
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.port}"
    try:
        if config.tls is not None:
            port = server.add_secure_port(address, server_credentials(config.tls))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as err:
        # gRPC reports bad credentials as a failure to bind: say what to check.
        raise OSError(f"cannot listen on {address}{_tls_hint(config)}: {err}") from None
    if port == 0:
        raise OSError(f"cannot listen on {address}{_tls_hint(config)}")
    return f"{host}:{port}"


def _tls_hint(config: ListenConfig) -> str:
    if config.tls is None:
        return ""
    return (
        f" with TLS (check that {config.tls.cert_file} and {config.tls.key_file} are a PEM "
        "certificate chain and its private key)"
    )
