"""The gRPC server's channel arguments come from the config: message size, streams, keepalive."""

from __future__ import annotations

from streamgate.config import KeepaliveConfig, ListenConfig
from streamgate.gateway.grpc.server import server_options


def test_options_follow_the_config() -> None:
    config = ListenConfig(
        max_message_bytes=8 << 20,
        max_concurrent_streams=77,
        keepalive=KeepaliveConfig(
            time_seconds=30,
            timeout_seconds=5,
            permit_without_calls=True,
            min_ping_interval_seconds=10,
            max_ping_strikes=0,
        ),
    )
    options = dict(server_options(config))
    assert options["grpc.max_receive_message_length"] == 8 << 20
    assert options["grpc.max_send_message_length"] == 8 << 20
    assert options["grpc.max_concurrent_streams"] == 77
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.http2.max_ping_strikes"] == 0
    assert options["grpc.so_reuseport"] == 0


def test_defaults_tolerate_client_pings() -> None:
    options = dict(server_options(ListenConfig()))
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # grpc's default (5 min) would answer a client pinging every 10 s with GOAWAY.
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] <= 10_000
    assert options["grpc.max_receive_message_length"] == 4 << 20
