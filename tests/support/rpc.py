"""Reading gRPC answers in tests: a stream's messages, a failure's status and google.rpc
details."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from streamgate_client.v1 import generation_pb2 as pb


@dataclass
class RpcFailure:
    """A failed call's status and google.rpc details."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    violations: list[tuple[str, str]]
    retry_delay: float | None
    trailing: dict[str, str]
    quota: list[tuple[str, str]] = field(default_factory=list)
    """QuotaFailure violations: (subject, description)."""


def failure(err: grpc.RpcError) -> RpcFailure:
    """Decode `err` (a grpc.Call) into its status and details."""
    assert isinstance(err, grpc.Call)
    return decode_status(err.code(), err.details() or "", err.trailing_metadata() or ())


def status_failure(status: grpc.Status) -> RpcFailure:
    """Decode a status a server answers with (e.g. the gateway's `rich_status`)."""
    return decode_status(status.code, status.details, status.trailing_metadata)


def decode_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, str | bytes]]
) -> RpcFailure:
    """A status code, its message and its trailing metadata, with `grpc-status-details-bin`
    decoded."""
    trailing = dict(trailing_metadata)
    raw = trailing.get("grpc-status-details-bin")
    reason, metadata, violations, retry = "", {}, [], None
    quota: list[tuple[str, str]] = []
    if raw is not None:
        assert isinstance(raw, bytes)
        status = status_pb2.Status.FromString(raw)
        assert status.code == code.value[0]
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                assert info.domain == "streamgate.dev"
                reason, metadata = info.reason, dict(info.metadata)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info_retry = error_details_pb2.RetryInfo()
                packed.Unpack(info_retry)
                retry = info_retry.retry_delay.ToTimedelta().total_seconds()
            elif packed.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                info_quota = error_details_pb2.QuotaFailure()
                packed.Unpack(info_quota)
                quota = [(v.subject, v.description) for v in info_quota.violations]
    text = {k: v for k, v in trailing.items() if isinstance(v, str)}
    return RpcFailure(code, message, reason, metadata, violations, retry, text, quota)


@dataclass
class StreamResult:
    """Everything a GenerateStream call returned."""

    start: pb.Start | None
    deltas: list[pb.Delta]
    end: pb.End | None
    initial_metadata: dict[str, str]
    error: RpcFailure | None = None

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


def read_stream(call: Any) -> StreamResult:
    """Read a GenerateStream call to its end (or its error)."""
    result = StreamResult(None, [], None, {})
    try:
        for message in call:
            kind = message.WhichOneof("event")
            if kind == "start":
                assert result.start is None and not result.deltas
                result.start = message.start
            elif kind == "delta":
                assert result.start is not None and result.end is None
                result.deltas.append(message.delta)
            else:
                assert result.end is None
                result.end = message.end
    except grpc.RpcError as err:
        result.error = failure(err)
    result.initial_metadata = {k: v for k, v in (call.initial_metadata() or ())}
    return result


def expect_failure(fn: Callable[[], object]) -> RpcFailure:
    """Run a unary call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        fn()
    return failure(caught.value)
