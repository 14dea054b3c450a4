"""streamgate_client.errors: statuses become typed errors with their google.rpc details decoded,
from both clients, unary and streaming."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from streamgate_client import (
    AsyncClient,
    Client,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StreamEvent,
    StreamgateError,
    UnauthenticatedError,
    UnavailableError,
)
from streamgate_client.events import StreamDelta
from support.stub_generation import DOMAIN, EXPECTED_START, Stub, error_info, run_sync


def _check_invalid(err: StreamgateError) -> None:
    assert isinstance(err, InvalidArgumentError)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "2 invalid fields"
    assert err.reason == "INVALID_FIELD"
    assert err.domain == DOMAIN
    assert err.field_violations == [
        ("stopping.max_new_tokens", "must be at least 1"),
        ("sampling.top_p", "must be in (0, 1]"),
    ]
    assert err.request_id == "req-err"  # ErrorInfo's, before the header's
    assert err.retry_delay is None
    assert err.tokens_sent is None
    assert len(err.details) == 2


async def test_invalid_argument_details_sync_stream(stub: Stub) -> None:
    def work(client: Client) -> object:
        try:
            list(client.generate_stream("invalid"))
        except StreamgateError as err:
            return err
        return None

    err = await run_sync(stub, work)
    assert isinstance(err, StreamgateError)
    _check_invalid(err)
    assert "\n" not in str(err)
    assert str(err).startswith("INVALID_ARGUMENT INVALID_FIELD: 2 invalid fields")


async def test_invalid_argument_details_sync_unary(stub: Stub) -> None:
    def work(client: Client) -> object:
        try:
            client.generate("invalid")
        except StreamgateError as err:
            return err
        return None

    err = await run_sync(stub, work)
    assert isinstance(err, StreamgateError)
    _check_invalid(err)


async def test_invalid_argument_details_async(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(InvalidArgumentError) as from_stream:
            async for _ in client.generate_stream("invalid"):
                pass
        with pytest.raises(InvalidArgumentError) as from_unary:
            await client.generate("invalid")
    _check_invalid(from_stream.value)
    _check_invalid(from_unary.value)


async def test_resource_exhausted_carries_retry_and_quota(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(ResourceExhaustedError) as caught:
            await client.generate("exhausted")
    err = caught.value
    assert err.retry_delay == pytest.approx(1.5)
    assert err.quota_violations == [("tenant:acme", "60 requests per minute")]
    assert err.reason == "RATE_LIMITED"
    assert err.metadata == {"request_id": "req-err", "route": "default"}
    assert "[retry in 1.5 s]" in str(err)


async def test_failure_mid_stream_says_how_many_tokens_were_sent(stub: Stub) -> None:
    seen: list[StreamEvent] = []
    async with AsyncClient(stub.target) as client:
        with pytest.raises(UnavailableError) as caught:
            async for event in client.generate_stream("midstream"):
                seen.append(event)
    assert seen == [EXPECTED_START, StreamDelta("a"), StreamDelta("b")]
    assert caught.value.tokens_sent == 2
    assert caught.value.metadata["backend"] == "stub-0"
    assert caught.value.reason == "BACKEND_STREAM_BROKEN"


async def test_unknown_details_are_kept_and_request_id_falls_back(stub: Stub) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(InternalError) as caught:
            await client.generate("odd", request_id="sent-by-client")
    err = caught.value
    assert err.reason == "ODD"
    assert err.request_id == "req-header"  # the server's x-request-id, before the client's
    odd = err.details[0]
    assert isinstance(odd, any_pb2.Any)  # left packed
    assert odd.TypeName() == "streamgate.v1.Usage"


def test_error_line_does_not_repeat_itself() -> None:
    violations = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="sampling.top_p", description="must be in (0, 1]"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="stopping.max_new_tokens", description="must be at least 1"
            ),
        ]
    )
    err = InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad request:\n  sampling.top_p must be in (0, 1]",
        [error_info("INVALID_ARGUMENT", request_id="r-7", tokens_sent="0"), violations],
    )
    assert str(err) == (
        "INVALID_ARGUMENT: bad request: sampling.top_p must be in (0, 1] "
        "(stopping.max_new_tokens: must be at least 1) [request r-7]"
    )
    assert err.tokens_sent == 0


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("NOT_FOUND", NotFoundError),
        ("UNAUTHENTICATED", UnauthenticatedError),
        ("PERMISSION_DENIED", PermissionDeniedError),
        ("FAILED_PRECONDITION", StreamgateError),
    ],
)
async def test_status_codes_map_to_error_classes(
    stub: Stub, prompt: str, kind: type[StreamgateError]
) -> None:
    async with AsyncClient(stub.target) as client:
        with pytest.raises(StreamgateError) as caught:
            async for _ in client.generate_stream(prompt):
                pass
    assert type(caught.value) is kind
    assert str(caught.value).startswith(f"{prompt}: plain ")  # reason == code: said once
    assert caught.value.code.name == prompt
    assert caught.value.reason == prompt
    assert caught.value.request_id == "req-header"
