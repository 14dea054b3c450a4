"""Typed errors: a non-OK gRPC status with its google.rpc details decoded.

The gateway sends the details (`google.rpc.Status` in the `grpc-status-details-bin` trailer) as
grpcio-status writes them: ErrorInfo (reason, metadata), RetryInfo, BadRequest field violations,
QuotaFailure. `error_from_rpc` turns any failed call, sync or asyncio, into the subclass of
`StreamgateError` for its status code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message

# googleapis-common-protos ships no py.typed marker, so mypy sees these modules as Any;
# `unused-ignore` keeps the lines valid should typed stubs be installed one day.
from google.rpc import error_details_pb2 as rpc_details  # type: ignore[import-untyped, unused-ignore]
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from streamgate_client.metadata import metadata_dict


class StreamgateError(Exception):
    """A call ended with a non-OK gRPC status; the google.rpc details are decoded into attributes.

    Attributes:
        code: the gRPC status code.
        message: the status message.
        details: every google.rpc detail message, unpacked (ErrorInfo, RetryInfo, BadRequest,
            QuotaFailure, ...); details of unknown types stay `google.protobuf.Any`.
        reason, domain, metadata: from ErrorInfo (reason is UPPER_SNAKE, e.g. "RATE_LIMITED").
        retry_delay: seconds to wait before retrying, from RetryInfo.
        field_violations: (field, description) pairs, from BadRequest.
        quota_violations: (subject, description) pairs, from QuotaFailure.
        tokens_sent: tokens delivered before a stream failed (ErrorInfo metadata `tokens_sent`).
        request_id: ErrorInfo's `request_id`, else the `x-request-id` the server sent, else the
            one the client sent.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[Message] = (),
        *,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)
        self.reason: str | None = None
        self.domain: str | None = None
        self.metadata: dict[str, str] = {}
        self.retry_delay: float | None = None
        self.field_violations: list[tuple[str, str]] = []
        self.quota_violations: list[tuple[str, str]] = []
        for detail in self.details:
            if isinstance(detail, rpc_details.ErrorInfo) and self.reason is None:
                self.reason, self.domain = detail.reason, detail.domain
                self.metadata = dict(detail.metadata)
            elif isinstance(detail, rpc_details.RetryInfo):
                self.retry_delay = detail.retry_delay.ToTimedelta().total_seconds()
            elif isinstance(detail, rpc_details.BadRequest):
                self.field_violations += [(v.field, v.description) for v in detail.field_violations]
            elif isinstance(detail, rpc_details.QuotaFailure):
                self.quota_violations += [(v.subject, v.description) for v in detail.violations]
        self.tokens_sent: int | None = _int_or_none(self.metadata.get("tokens_sent"))
        self.request_id: str | None = self.metadata.get("request_id") or request_id

    def __str__(self) -> str:
        """One line: `CODE REASON: message (field: why; ...) [retry in 1 s] [request r-1]`."""
        head = self.code.name
        if self.reason and self.reason != head:
            head += f" {self.reason}"
        text = f"{head}: {self.message}" if self.message else head
        # Violations the message does not already spell out (servers often summarize there).
        missing = [
            (f, d)
            for f, d in self.field_violations
            if f not in self.message or d not in self.message
        ]
        if missing:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in missing) + ")"
        if self.retry_delay is not None:
            text += f" [retry in {self.retry_delay:g} s]"
        if self.request_id:
            text += f" [request {self.request_id}]"
        return " ".join(text.split())  # one line, whatever the server put in the message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(StreamgateError):
    """INVALID_ARGUMENT: a bad field; see `field_violations`."""


class NotFoundError(StreamgateError):
    """NOT_FOUND: unknown model/route (or a cache-only request that missed)."""


class UnauthenticatedError(StreamgateError):
    """UNAUTHENTICATED: no or invalid API key."""


class PermissionDeniedError(StreamgateError):
    """PERMISSION_DENIED: the key lacks access to this route."""


class ResourceExhaustedError(StreamgateError):
    """RESOURCE_EXHAUSTED: rate limit, overload or full queue; see `retry_delay`."""


class UnavailableError(StreamgateError):
    """UNAVAILABLE: no healthy backend, draining, unreachable gateway, or a backend that failed
    after `tokens_sent` tokens."""


class DeadlineExceededError(StreamgateError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class InternalError(StreamgateError):
    """INTERNAL: a failure inside the gateway or backend."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[StreamgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}

# Detail types a gateway may send (google/rpc/error_details.proto); others stay packed.
_DETAIL_TYPES: tuple[type[Message], ...] = (
    rpc_details.ErrorInfo,
    rpc_details.RetryInfo,
    rpc_details.BadRequest,
    rpc_details.QuotaFailure,
    rpc_details.PreconditionFailure,
    rpc_details.ResourceInfo,
    rpc_details.RequestInfo,
    rpc_details.DebugInfo,
    rpc_details.Help,
    rpc_details.LocalizedMessage,
)


def _unpack(detail: any_pb2.Any) -> Message:
    for kind in _DETAIL_TYPES:
        if detail.TypeName() == kind.DESCRIPTOR.full_name:
            message = kind()
            detail.Unpack(message)
            return message
    return detail


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class _FailedCall(Protocol):
    """What both a failed sync call (grpc.RpcError that is a grpc.Call) and
    grpc.aio.AioRpcError offer, synchronously."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def initial_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...
    def trailing_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...


def error_from_rpc(err: grpc.RpcError, request_id: str | None = None) -> StreamgateError:
    """The typed error of a failed call (a sync `grpc.RpcError` or a `grpc.aio.AioRpcError`).

    `request_id` is the id the client sent, used when the server named none.
    """
    if not all(hasattr(err, m) for m in ("code", "details", "trailing_metadata")):
        return StreamgateError(grpc.StatusCode.UNKNOWN, str(err), request_id=request_id)
    call = cast(_FailedCall, err)
    details: list[Message] = []
    try:
        # from_call only uses code(), details() and trailing_metadata(), which AioRpcError has too.
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, call))
    except ValueError:  # the trailer contradicts the status: trust the status, drop the details
        status = None
    if status is not None:
        details = [_unpack(d) for d in status.details]
    headers = metadata_dict(call.initial_metadata()) | metadata_dict(call.trailing_metadata())
    code = call.code()
    cls = _ERROR_CLASSES.get(code, StreamgateError)
    return cls(
        code, call.details() or "", details, request_id=headers.get("x-request-id") or request_id
    )
