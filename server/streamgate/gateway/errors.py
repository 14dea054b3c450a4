"""Every failure a caller can see: a gRPC status with google.rpc details (docs/api.md).

A pipeline stage raises `GatewayError(code, reason, message, ...)`; the servicer turns it into
the call's status with `to_status()`:

- `ErrorInfo` always: a stable UPPER_SNAKE `reason`, domain `streamgate.dev`, and metadata
  (request_id, route, backend, tokens_sent when known);
- `BadRequest` with one field violation per bad field (INVALID_ARGUMENT);
- `RetryInfo` on RESOURCE_EXHAUSTED and UNAVAILABLE.

Backend failures (`BackendError`) are mapped by `from_backend_error` after DESIGN.md's table.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import grpc
from google.protobuf import any_pb2, duration_pb2

# No stubs for googleapis-common-protos in the environment (googleapis-common-protos-stubs would
# add them); `unused-ignore` keeps this valid once they are installed.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from streamgate.backends import BackendError

__all__ = [
    "DOMAIN",
    "NO_RETRY",
    "GatewayError",
    "Reason",
    "RichStatus",
    "Violation",
    "from_backend_error",
    "internal_error",
]

DOMAIN = "streamgate.dev"
# Clients that honour RetryInfo wait this long before trying again.
_RETRY_AFTER_SECONDS = 1.0
NO_RETRY = -1.0
"""`retry_after` of an error that retrying cannot fix: no RetryInfo."""


class Reason(StrEnum):
    """`ErrorInfo.reason` values: part of the API, never renamed."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    """Bad request fields (BadRequest lists them)."""
    CHAT_TEMPLATE_ERROR = "CHAT_TEMPLATE_ERROR"
    """The route's chat template refused the messages (unknown role, ...)."""
    BACKEND_VALIDATION = "BACKEND_VALIDATION"
    """The backend rejected the request (e.g. prompt over its token limit)."""
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    NOT_CACHED = "NOT_CACHED"
    """CACHE_MODE_ONLY_IF_CACHED and no cached answer."""
    CACHE_UNAVAILABLE = "CACHE_UNAVAILABLE"
    """The shared cache tier could not be reached by an admin operation."""
    BACKEND_OVERLOADED = "BACKEND_OVERLOADED"
    CLIENT_TOO_SLOW = "CLIENT_TOO_SLOW"
    """The client read nothing for the stall timeout while its buffer was full."""
    NO_HEALTHY_BACKEND = "NO_HEALTHY_BACKEND"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    BACKEND_PROTOCOL_ERROR = "BACKEND_PROTOCOL_ERROR"
    DRAINING = "DRAINING"
    """The gateway is shutting down."""
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    BACKEND_TIMEOUT = "BACKEND_TIMEOUT"
    """The backend sent nothing for its idle timeout."""
    BACKEND_GENERATION_FAILED = "BACKEND_GENERATION_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    API_KEY_MISSING = "API_KEY_MISSING"
    """No `authorization: Bearer <key>` metadata (UNAUTHENTICATED)."""
    API_KEY_INVALID = "API_KEY_INVALID"
    """An unknown key (UNAUTHENTICATED)."""
    ROUTE_NOT_ALLOWED = "ROUTE_NOT_ALLOWED"
    """The tenant may not use the route, whether it exists or not (PERMISSION_DENIED)."""
    NOT_ADMIN = "NOT_ADMIN"
    """An admin call with a key without admin rights (PERMISSION_DENIED)."""
    RATE_LIMITED = "RATE_LIMITED"
    """A requests or tokens per minute limit (QuotaFailure says which)."""
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    """The tenant's (or key's) concurrent streams limit."""
    REQUEST_OVER_QUOTA = "REQUEST_OVER_QUOTA"
    """The request alone reserves more tokens than the per-minute limit: it can never pass."""
    GENERATION_ABANDONED = "GENERATION_ABANDONED"
    """The identical request this call had joined was cancelled before its first token."""
    QUEUE_FULL = "QUEUE_FULL"
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"
    """Waited the longest queue time (or the caller's deadline) for an upstream slot."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: its path in the request (`sampling.top_p`) and what is wrong."""

    field: str
    description: str


_RETRY_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


class GatewayError(Exception):
    """A failure with its gRPC code, stable reason and details.

    Args:
        code: the gRPC status code.
        reason: the ErrorInfo reason.
        message: the status message (human readable, may change).
        violations: BadRequest field violations (INVALID_ARGUMENT).
        metadata: extra ErrorInfo metadata.
        tokens_sent: tokens the client received before the failure, when a stream was under
            way (goes into ErrorInfo metadata).
        backend: the backend involved, if any.
        retry_after: RetryInfo's delay in seconds (RESOURCE_EXHAUSTED and UNAVAILABLE; default
            1 s); `NO_RETRY` leaves RetryInfo out (retrying cannot help).
        quota_violations: QuotaFailure entries, (subject, description).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: Reason,
        message: str,
        *,
        violations: Iterable[Violation] = (),
        metadata: Mapping[str, str] | None = None,
        tokens_sent: int | None = None,
        backend: str | None = None,
        retry_after: float = _RETRY_AFTER_SECONDS,
        quota_violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})
        self.tokens_sent = tokens_sent
        self.backend = backend
        self.retry_after = retry_after
        self.quota_violations = tuple(quota_violations)

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.reason.value}, {self.message!r})"

    def to_status(
        self,
        *,
        request_id: str,
        route: str | None = None,
        backend: str | None = None,
        tokens_sent: int | None = None,
        trailing: Iterable[tuple[str, str]] = (),
    ) -> grpc.Status:
        """The call's status; `x-request-id` and `trailing` are in the trailing metadata too."""
        backend = self.backend or backend
        tokens = self.tokens_sent if self.tokens_sent is not None else tokens_sent
        meta = {"request_id": request_id}
        if route:
            meta["route"] = route
        if backend:
            meta["backend"] = backend
        if tokens is not None:
            meta["tokens_sent"] = str(tokens)
        meta.update(self.metadata)
        details = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=meta)]
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
        if self.quota_violations:
            details.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                        for s, d in self.quota_violations
                    ]
                )
            )
        if self.code in _RETRY_CODES and self.retry_after != NO_RETRY:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(datetime.timedelta(seconds=self.retry_after))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        proto = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            proto.details.append(packed)
        status = rpc_status.to_status(proto)
        return RichStatus(
            code=status.code,
            details=status.details,
            trailing_metadata=(
                *status.trailing_metadata,
                ("x-request-id", request_id),
                *trailing,
            ),
        )


@dataclass(frozen=True)
class RichStatus(grpc.Status):
    """A `grpc.Status` with our trailing metadata next to `grpc-status-details-bin`."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def internal_error(message: str = "internal error") -> GatewayError:
    """The catch-all: never UNKNOWN (the servicer logs the traceback)."""
    return GatewayError(grpc.StatusCode.INTERNAL, Reason.INTERNAL_ERROR, message)


# TGI's validation messages name parameters in backticks; the request field each one means.
_TGI_FIELDS: Mapping[str, str] = {
    "inputs": "prompt",
    "max_new_tokens": "stopping.max_new_tokens",
    "stop": "stopping.stop_sequences",
    "truncate": "stopping.truncate_input_tokens",
    "temperature": "sampling.temperature",
    "top_k": "sampling.top_k",
    "top_p": "sampling.top_p",
    "typical_p": "sampling.typical_p",
    "repetition_penalty": "sampling.repetition_penalty",
    "frequency_penalty": "sampling.frequency_penalty",
    "seed": "sampling.seed",
    "top_n_tokens": "response.top_n_tokens",
}
_BACKTICKED = re.compile(r"`([a-z_]+)`")


def _backend_violations(message: str, *, chat: bool) -> list[Violation]:
    """Field violations a TGI validation message points at (best effort, may be none)."""
    fields: list[str] = []
    for name in _BACKTICKED.findall(message):
        field = _TGI_FIELDS.get(name)
        if field == "prompt" and chat:
            field = "chat.messages"
        if field is not None and field not in fields:
            fields.append(field)
    return [Violation(f, message) for f in fields]


def from_backend_error(
    err: BackendError, *, tokens_sent: int, deadline_passed: bool, chat: bool = False
) -> GatewayError:
    """Map a backend failure (DESIGN.md's table).

    `deadline_passed`: the call's own deadline is over (a `timeout` then means the deadline,
    otherwise the backend's idle timeout). `tokens_sent`: tokens the client already received.
    """
    after = f" after {tokens_sent} tokens" if tokens_sent else ""
    text = f"backend {err.backend} failed{after}: {err.kind}: {err.message}"
    code, reason = _BACKEND_STATUS[err.kind]
    violations: list[Violation] = []
    if err.kind == "validation":
        text = err.message  # the backend's words: they name the limit that was hit
        violations = _backend_violations(err.message, chat=chat)
    elif err.kind == "timeout" and deadline_passed:
        reason, text = Reason.DEADLINE_EXCEEDED, f"deadline exceeded{after}"
    return GatewayError(
        code,
        reason,
        text,
        violations=violations,
        metadata={"backend_error": err.kind},
        tokens_sent=tokens_sent,
        backend=err.backend,
    )


_BACKEND_STATUS: Mapping[str, tuple[grpc.StatusCode, Reason]] = {
    "overloaded": (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.BACKEND_OVERLOADED),
    "validation": (grpc.StatusCode.INVALID_ARGUMENT, Reason.BACKEND_VALIDATION),
    "generation": (grpc.StatusCode.INTERNAL, Reason.BACKEND_GENERATION_FAILED),
    "protocol": (grpc.StatusCode.UNAVAILABLE, Reason.BACKEND_PROTOCOL_ERROR),
    "unavailable": (grpc.StatusCode.UNAVAILABLE, Reason.BACKEND_UNAVAILABLE),
    # A `timeout` without the call's deadline over is the backend's idle timeout.
    "timeout": (grpc.StatusCode.DEADLINE_EXCEEDED, Reason.BACKEND_TIMEOUT),
}
