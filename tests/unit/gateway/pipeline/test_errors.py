"""GatewayError: one code per reason, its google.rpc details, and the backend error table."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from streamgate.backends import BackendError, BackendErrorKind
from streamgate.gateway.pipeline.errors import (
    DOMAIN,
    NO_RETRY,
    Code,
    GatewayError,
    Reason,
    Violation,
    from_backend_error,
    internal_error,
    invalid,
)


def parts(details: list[object]) -> dict[str, object]:
    """The detail messages by type name (each type appears once)."""
    out = {type(d).__name__: d for d in details}
    assert len(out) == len(details)
    return out


def test_every_reason_has_one_code() -> None:
    for reason in Reason:
        assert isinstance(GatewayError(reason, "x").code, Code)
    assert GatewayError(Reason.BACKEND_OVERLOADED, "x").code is Code.RESOURCE_EXHAUSTED
    assert GatewayError(Reason.ROUTE_NOT_ALLOWED, "x").code is Code.PERMISSION_DENIED
    assert GatewayError(Reason.DRAINING, "x").code is Code.UNAVAILABLE


def test_a_bad_request_has_error_info_and_one_field_violation_per_field() -> None:
    err = GatewayError(
        Reason.INVALID_ARGUMENT,
        "invalid request: prompt",
        violations=(Violation("prompt", "must not be empty"),),
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert str(err) == err.message == "invalid request: prompt"
    found = parts(err.details(request_id="r1", route="tiny"))
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", DOMAIN)
    assert dict(info.metadata) == {"request_id": "r1", "route": "tiny"}
    bad = found["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("prompt", "must not be empty")
    ]
    assert "RetryInfo" not in found


@pytest.mark.parametrize("reason", [Reason.DRAINING, Reason.QUEUE_FULL])
def test_retry_info_on_retryable_codes(reason: Reason) -> None:
    err = GatewayError(reason, "x")
    assert err.code in (Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED)
    retry = parts(err.details(request_id="r"))["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0


def test_no_retry_info_when_retrying_cannot_help() -> None:
    err = GatewayError(Reason.REQUEST_OVER_QUOTA, "x", retry_after=NO_RETRY)
    assert "RetryInfo" not in parts(err.details(request_id="r"))


def test_tokens_sent_and_backend_in_metadata() -> None:
    err = GatewayError(Reason.BACKEND_GENERATION_FAILED, "x")
    info = parts(err.details(request_id="r", backend="b1", tokens_sent=7))["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["tokens_sent"] == "7" and info.metadata["backend"] == "b1"


def test_the_errors_own_backend_and_tokens_win_over_the_calls() -> None:
    err = GatewayError(Reason.BACKEND_UNAVAILABLE, "x", tokens_sent=2, backend="b2")
    info = parts(err.details(request_id="r", backend="b1", tokens_sent=7))["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.metadata["backend"], info.metadata["tokens_sent"]) == ("b2", "2")
    # A follower of a failed generation sees it with its own count.
    seen = err.received(5)
    assert (seen.tokens_sent, seen.reason, seen.backend) == (5, err.reason, "b2")
    assert err.tokens_sent == 2


def test_quota_failures_are_listed() -> None:
    err = GatewayError(
        Reason.RATE_LIMITED, "x", quota_violations=(("tenant:acme", "60 requests per minute"),)
    )
    quota = parts(err.details(request_id="r"))["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    assert [(v.subject, v.description) for v in quota.violations] == [
        ("tenant:acme", "60 requests per minute")
    ]


def test_invalid_names_the_fields_once_each() -> None:
    err = invalid(
        [Violation("prompt", "a"), Violation("prompt", "b"), Violation("cache.mode", "c")]
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert err.message == "invalid request: prompt, cache.mode"
    assert len(err.violations) == 3


def test_the_catch_all_is_internal_never_unknown() -> None:
    err = internal_error()
    assert (err.code, err.reason) == (Code.INTERNAL, Reason.INTERNAL_ERROR)
    assert "INTERNAL" in repr(err)


def backend_error(kind: BackendErrorKind, message: str = "m") -> BackendError:
    return BackendError(kind, message, tokens_received=0, backend="b1", retryable=False)


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("overloaded", Code.RESOURCE_EXHAUSTED, Reason.BACKEND_OVERLOADED),
        ("validation", Code.INVALID_ARGUMENT, Reason.BACKEND_VALIDATION),
        ("generation", Code.INTERNAL, Reason.BACKEND_GENERATION_FAILED),
        ("protocol", Code.UNAVAILABLE, Reason.BACKEND_PROTOCOL_ERROR),
        ("unavailable", Code.UNAVAILABLE, Reason.BACKEND_UNAVAILABLE),
        ("timeout", Code.DEADLINE_EXCEEDED, Reason.BACKEND_TIMEOUT),
    ],
)
def test_backend_error_table(kind: BackendErrorKind, code: Code, reason: Reason) -> None:
    err = from_backend_error(backend_error(kind), tokens_sent=3, deadline_passed=False)
    assert (err.code, err.reason) == (code, reason)
    assert err.tokens_sent == 3 and err.backend == "b1"
    assert err.metadata["backend_error"] == kind


def test_timeout_at_the_deadline_is_deadline_exceeded() -> None:
    err = from_backend_error(backend_error("timeout"), tokens_sent=0, deadline_passed=True)
    assert (err.code, err.reason) == (Code.DEADLINE_EXCEEDED, Reason.DEADLINE_EXCEEDED)


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
