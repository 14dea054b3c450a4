"""A GatewayError as the browser door's Connect error: the code of the same name, the message,
and the google.rpc details the gRPC door sends, as type and value (and `debug` in JSON lines)."""

from __future__ import annotations

import base64

from connectrpc.code import Code as ConnectCode
from connectrpc.errors import ConnectError
from google.rpc import error_details_pb2

from streamgate.gateway.connect.errors import (
    connect_code,
    connect_error,
    error_json,
    gateway_code,
    http_status,
)
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason, Violation
from streamgate.gateway.pipeline.s01_call import Call


def call() -> Call:
    return Call.start("GenerateStream", [("x-request-id", "r1")], peer="", time_remaining=None)


def test_every_error_code_has_connects_code_of_the_same_name() -> None:
    for code in set(Code) - {Code.OK}:  # Connect has no code for success
        expected = "canceled" if code == Code.CANCELLED else code.name.lower()
        assert connect_code(code).value == expected
        assert gateway_code(ConnectError(connect_code(code), "")) == code


def test_codes_the_gateway_never_answers_are_internal() -> None:
    assert gateway_code(ConnectError(ConnectCode.UNIMPLEMENTED, "")) == Code.INTERNAL
    assert gateway_code(ConnectError(ConnectCode.UNKNOWN, "")) == Code.INTERNAL


def test_http_status_of_an_error_before_any_message() -> None:
    assert http_status(Code.UNAUTHENTICATED) == 401
    assert http_status(Code.RESOURCE_EXHAUSTED) == 429
    assert http_status(Code.CANCELLED) == 499
    assert http_status(Code.OK) == 200


def test_the_details_travel_as_google_rpc_messages() -> None:
    err = GatewayError(
        Reason.RATE_LIMITED,
        "rate limit",
        retry_after=19.0,
        quota_violations=(("tenant:acme", "requests per minute"),),
    )
    connect = connect_error(err, call())
    assert connect.code == ConnectCode.RESOURCE_EXHAUSTED
    assert connect.message == "rate limit"
    types = [d.type_name for d in connect.details]
    assert types == ["google.rpc.ErrorInfo", "google.rpc.QuotaFailure", "google.rpc.RetryInfo"]
    info = error_details_pb2.ErrorInfo.FromString(connect.details[0].message_bytes)
    assert info.reason == "RATE_LIMITED"
    assert info.domain == "streamgate.dev"
    assert info.metadata["request_id"] == "r1"
    retry = error_details_pb2.RetryInfo.FromString(connect.details[2].message_bytes)
    assert retry.retry_delay.seconds == 19


def test_error_json_has_unpadded_base64_and_debug() -> None:
    err = GatewayError(
        Reason.INVALID_ARGUMENT,
        "invalid request: prompt",
        violations=(Violation("prompt", "must not be empty"),),
    )
    data = error_json(err, call())
    assert data["code"] == "invalid_argument"
    assert data["message"] == "invalid request: prompt"
    info, bad = data["details"]
    assert info["type"] == "google.rpc.ErrorInfo"
    assert info["debug"]["reason"] == "INVALID_ARGUMENT"
    assert not bad["value"].endswith("=")
    raw = base64.b64decode(bad["value"] + "=" * (-len(bad["value"]) % 4))
    violation = error_details_pb2.BadRequest.FromString(raw).field_violations[0]
    assert (violation.field, violation.description) == ("prompt", "must not be empty")
    assert bad["debug"] == {
        "fieldViolations": [{"field": "prompt", "description": "must not be empty"}]
    }
