"""Errors as gRPC statuses with google.rpc details, and the backend error table."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from streamgate.backends import BackendError
from streamgate.gateway.errors import DOMAIN, GatewayError, Reason, Violation, from_backend_error


def details(status: grpc.Status) -> tuple[status_pb2.Status, dict[str, object]]:
    meta = dict(status.trailing_metadata)
    proto = status_pb2.Status.FromString(meta["grpc-status-details-bin"])
    out: dict[str, object] = {}
    for packed in proto.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                out[cls.__name__] = message
    return proto, out


def test_bad_request_status() -> None:
    err = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        "invalid request: prompt",
        violations=[Violation("prompt", "must not be empty")],
    )
    status = err.to_status(request_id="r1", route="tiny")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "invalid request: prompt"
    assert ("x-request-id", "r1") in status.trailing_metadata
    proto, parts = details(status)
    assert proto.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = parts["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", DOMAIN)
    assert dict(info.metadata) == {"request_id": "r1", "route": "tiny"}
    bad = parts["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("prompt", "must not be empty")
    ]
    assert "RetryInfo" not in parts


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_retry_info_on_retryable_codes(code: grpc.StatusCode) -> None:
    status = GatewayError(code, Reason.DRAINING, "x").to_status(request_id="r")
    retry = details(status)[1]["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0


def test_tokens_sent_and_backend_in_metadata() -> None:
    err = GatewayError(grpc.StatusCode.INTERNAL, Reason.BACKEND_GENERATION_FAILED, "x")
    info = details(err.to_status(request_id="r", backend="b1", tokens_sent=7))[1]["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["tokens_sent"] == "7" and info.metadata["backend"] == "b1"


def backend_error(kind: str, message: str = "m") -> BackendError:
    return BackendError(kind, message, tokens_received=0, backend="b1", retryable=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("overloaded", grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.BACKEND_OVERLOADED),
        ("validation", grpc.StatusCode.INVALID_ARGUMENT, Reason.BACKEND_VALIDATION),
        ("generation", grpc.StatusCode.INTERNAL, Reason.BACKEND_GENERATION_FAILED),
        ("protocol", grpc.StatusCode.UNAVAILABLE, Reason.BACKEND_PROTOCOL_ERROR),
        ("unavailable", grpc.StatusCode.UNAVAILABLE, Reason.BACKEND_UNAVAILABLE),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED, Reason.BACKEND_TIMEOUT),
    ],
)
def test_backend_error_table(kind: str, code: grpc.StatusCode, reason: Reason) -> None:
    err = from_backend_error(backend_error(kind), tokens_sent=3, deadline_passed=False)
    assert (err.code, err.reason) == (code, reason)
    assert err.tokens_sent == 3 and err.backend == "b1"
    assert err.metadata["backend_error"] == kind


def test_timeout_at_the_deadline_is_deadline_exceeded() -> None:
    err = from_backend_error(backend_error("timeout"), tokens_sent=0, deadline_passed=True)
    assert (err.code, err.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, Reason.DEADLINE_EXCEEDED)


def test_backend_validation_points_at_fields() -> None:
    message = (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 512. "
        "Given: 600 `inputs` tokens and 10 `max_new_tokens`"
    )
    err = from_backend_error(
        backend_error("validation", message), tokens_sent=0, deadline_passed=False
    )
    assert err.message == message
    assert [v.field for v in err.violations] == ["prompt", "stopping.max_new_tokens"]
    chat = from_backend_error(
        backend_error("validation", message), tokens_sent=0, deadline_passed=False, chat=True
    )
    assert [v.field for v in chat.violations] == ["chat.messages", "stopping.max_new_tokens"]
