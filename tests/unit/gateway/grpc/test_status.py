"""A GatewayError as a call's gRPC status: code, message, google.rpc details in
grpc-status-details-bin, the request id and the call's own trailing metadata."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from streamgate.gateway.grpc.status import grpc_code, rich_status
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason, Violation
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s06_coalesce import Origin
from streamgate.gateway.pipeline.s10_respond import Delivery
from streamgate.routing import Pool, RoundRobin, Route, Target
from support.rpc import status_failure


def call(request_id: str = "r1", route: str | None = "tiny", streaming: bool = True) -> Call:
    """A call with a valid request id, on `route` (None: failed before routing)."""
    method = "GenerateStream" if streaming else "Generate"
    c = Call.start(
        method,
        [("x-request-id", request_id)],
        peer="",
        time_remaining=None,
        streaming=streaming,
    )
    if route is not None:
        c.record.route = Route(route, Target(((Pool("p", (), RoundRobin()), 1.0),)))
    return c


def test_every_code_is_grpcs_code_of_the_same_number() -> None:
    for code in Code:
        assert grpc_code(code).value[0] == code.value


def test_a_bad_request_status() -> None:
    err = GatewayError(
        Reason.INVALID_ARGUMENT,
        "invalid request: prompt",
        violations=(Violation("prompt", "must not be empty"),),
    )
    status = rich_status(err, call())
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "invalid request: prompt"
    assert ("x-request-id", "r1") in status.trailing_metadata
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    assert status_pb2.Status.FromString(raw).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    seen = status_failure(status)
    assert seen.reason == "INVALID_ARGUMENT"
    assert seen.metadata == {"request_id": "r1", "route": "tiny"}
    assert seen.violations == [("prompt", "must not be empty")]
    assert seen.retry_delay is None


def test_retry_info_on_retryable_codes() -> None:
    for reason in (Reason.DRAINING, Reason.QUEUE_FULL):
        seen = status_failure(rich_status(GatewayError(reason, "x"), call()))
        assert seen.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert seen.retry_delay is not None and seen.retry_delay > 0


def test_the_backend_and_the_tokens_the_call_delivered_are_in_the_metadata() -> None:
    c = call()
    c.record.origin = Origin("m", "b1", "p", 0, None)
    c.record.delivery = Delivery(tokens=7)
    seen = status_failure(rich_status(GatewayError(Reason.BACKEND_GENERATION_FAILED, "x"), c))
    assert seen.code == grpc.StatusCode.INTERNAL
    assert seen.metadata["tokens_sent"] == "7" and seen.metadata["backend"] == "b1"


def test_a_unary_call_was_sent_no_tokens_before_its_failure() -> None:
    c = call(streaming=False)
    c.record.origin = Origin("m", "b1", "p", 0, None)
    c.record.delivery = Delivery(tokens=7)  # collected, never sent
    seen = status_failure(rich_status(GatewayError(Reason.BACKEND_GENERATION_FAILED, "x"), c))
    assert seen.metadata["tokens_sent"] == "0" and seen.metadata["backend"] == "b1"


def test_no_tokens_sent_before_a_backend_was_chosen() -> None:
    seen = status_failure(rich_status(GatewayError(Reason.ROUTE_NOT_FOUND, "x"), call(route=None)))
    assert seen.code == grpc.StatusCode.NOT_FOUND
    assert seen.metadata == {"request_id": "r1"}


def test_the_calls_trailing_metadata_goes_out_with_its_status() -> None:
    c = call()
    c.trailing = [("x-ratelimit-remaining-requests", "4")]
    status = rich_status(GatewayError(Reason.RATE_LIMITED, "slow down"), c)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(status.trailing_metadata)
    assert trailing["x-ratelimit-remaining-requests"] == "4"
    assert trailing["x-request-id"] == "r1"
