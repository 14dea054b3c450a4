"""Every failure a caller can see, whatever the transport: a code, a stable reason and google.rpc
details (docs/api.md, "Errors").

A stage raises `GatewayError(reason, message, ...)`; each reason has exactly one code (the
table below). A transport turns the error into its own status: gRPC packs `details()` into
`grpc-status-details-bin`, Connect into the error's `details`. The details are:

- `ErrorInfo` always: the reason, domain `streamgate.dev`, and metadata (request_id, route,
  backend, tokens_sent when known);
- `BadRequest` with one field violation per bad field (INVALID_ARGUMENT);
- `QuotaFailure` for a quota that refused the call;
- `RetryInfo` on RESOURCE_EXHAUSTED and UNAVAILABLE, unless retrying cannot help.

Backend failures (`BackendError`) are mapped by `from_backend_error` (docs/api.md's table).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from google.protobuf import duration_pb2

# No stubs for googleapis-common-protos in the environment (googleapis-common-protos-stubs would
# add them); `unused-ignore` keeps this valid once they are installed.
from google.rpc import error_details_pb2  # type: ignore[import-untyped, unused-ignore]

from streamgate.backends import BackendError, BackendErrorKind

__all__ = [
    "DOMAIN",
    "NO_RETRY",
    "Code",
    "GatewayError",
    "Reason",
    "Violation",
    "from_backend_error",
    "internal_error",
    "invalid",
]

DOMAIN = "streamgate.dev"
NO_RETRY = -1.0
"""`retry_after` of an error that retrying cannot fix: no RetryInfo."""
# Clients that honour RetryInfo wait this long before trying again.
_RETRY_AFTER_SECONDS = 1.0


class Code(IntEnum):
    """The status codes the gateway answers with: gRPC's, by name and number (Connect uses the
    same codes, spelled in lower case)."""

    OK = 0
    CANCELLED = 1
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class Reason(StrEnum):
    """`ErrorInfo.reason` values: part of the API, never renamed. Each has one `Code`."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    """Bad request fields (BadRequest lists them), or bytes that are not a request."""
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
    """No `authorization: Bearer <key>` metadata."""
    API_KEY_INVALID = "API_KEY_INVALID"
    """An unknown or malformed key."""
    ROUTE_NOT_ALLOWED = "ROUTE_NOT_ALLOWED"
    """The tenant may not use the route, whether it exists or not."""
    NOT_ADMIN = "NOT_ADMIN"
    """An admin call with a key without admin rights."""
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
    """Waited the longest queue time for an upstream slot."""


_CODE_OF: Mapping[Reason, Code] = {
    Reason.INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
    Reason.CHAT_TEMPLATE_ERROR: Code.INVALID_ARGUMENT,
    Reason.BACKEND_VALIDATION: Code.INVALID_ARGUMENT,
    Reason.ROUTE_NOT_FOUND: Code.NOT_FOUND,
    Reason.NOT_CACHED: Code.NOT_FOUND,
    Reason.CACHE_UNAVAILABLE: Code.UNAVAILABLE,
    Reason.BACKEND_OVERLOADED: Code.RESOURCE_EXHAUSTED,
    Reason.CLIENT_TOO_SLOW: Code.RESOURCE_EXHAUSTED,
    Reason.NO_HEALTHY_BACKEND: Code.UNAVAILABLE,
    Reason.BACKEND_UNAVAILABLE: Code.UNAVAILABLE,
    Reason.BACKEND_PROTOCOL_ERROR: Code.UNAVAILABLE,
    Reason.DRAINING: Code.UNAVAILABLE,
    Reason.DEADLINE_EXCEEDED: Code.DEADLINE_EXCEEDED,
    Reason.BACKEND_TIMEOUT: Code.DEADLINE_EXCEEDED,
    Reason.BACKEND_GENERATION_FAILED: Code.INTERNAL,
    Reason.INTERNAL_ERROR: Code.INTERNAL,
    Reason.API_KEY_MISSING: Code.UNAUTHENTICATED,
    Reason.API_KEY_INVALID: Code.UNAUTHENTICATED,
    Reason.ROUTE_NOT_ALLOWED: Code.PERMISSION_DENIED,
    Reason.NOT_ADMIN: Code.PERMISSION_DENIED,
    Reason.RATE_LIMITED: Code.RESOURCE_EXHAUSTED,
    Reason.TOO_MANY_STREAMS: Code.RESOURCE_EXHAUSTED,
    Reason.REQUEST_OVER_QUOTA: Code.RESOURCE_EXHAUSTED,
    Reason.GENERATION_ABANDONED: Code.UNAVAILABLE,
    Reason.QUEUE_FULL: Code.RESOURCE_EXHAUSTED,
    Reason.QUEUE_TIMEOUT: Code.RESOURCE_EXHAUSTED,
}

_RETRY_CODES = frozenset({Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field: its path in the request (`sampling.top_p`) and what is wrong."""

    field: str
    description: str


# Not frozen: Python's own code (contextlib, asyncio) assigns __traceback__ to exceptions.
@dataclass(eq=False)
class GatewayError(Exception):
    """A failure with its stable reason (hence its code) and details.

    Attributes:
        reason: the ErrorInfo reason.
        message: the status message (human readable, may change).
        violations: BadRequest field violations (INVALID_ARGUMENT).
        metadata: extra ErrorInfo metadata.
        tokens_sent: tokens the client received before the failure, when a stream was under
            way (goes into ErrorInfo metadata).
        backend: the backend involved, if any.
        retry_after: RetryInfo's delay in seconds (RESOURCE_EXHAUSTED and UNAVAILABLE);
            `NO_RETRY` leaves RetryInfo out (retrying cannot help).
        quota_violations: QuotaFailure entries, (subject, description).
    """

    reason: Reason
    message: str
    violations: tuple[Violation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    tokens_sent: int | None = None
    backend: str | None = None
    retry_after: float = _RETRY_AFTER_SECONDS
    quota_violations: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    @property
    def code(self) -> Code:
        """The status code of the reason."""
        return _CODE_OF[self.reason]

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.reason.value}, {self.message!r})"

    def received(self, tokens_sent: int) -> GatewayError:
        """The same failure as seen by a caller who received `tokens_sent` tokens."""
        return dataclasses.replace(self, tokens_sent=tokens_sent)

    def details(
        self,
        *,
        request_id: str,
        route: str | None = None,
        backend: str | None = None,
        tokens_sent: int | None = None,
    ) -> list[Any]:
        """The google.rpc detail messages of this error in a call (see the module doc)."""
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
        out: list[Any] = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=meta)
        ]
        if self.violations:
            out.append(
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
            out.append(
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
            out.append(error_details_pb2.RetryInfo(retry_delay=delay))
        return out


def invalid(violations: Iterable[Violation], message: str | None = None) -> GatewayError:
    """INVALID_ARGUMENT listing `violations` (the message names their fields by default)."""
    violations = tuple(violations)
    fields = ", ".join(dict.fromkeys(v.field for v in violations))
    return GatewayError(
        Reason.INVALID_ARGUMENT, message or f"invalid request: {fields}", violations=violations
    )


def internal_error(message: str = "internal error") -> GatewayError:
    """The catch-all: never UNKNOWN (whoever catches an unexpected exception logs it)."""
    return GatewayError(Reason.INTERNAL_ERROR, message)


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

_BACKEND_REASON: Mapping[BackendErrorKind, Reason] = {
    "overloaded": Reason.BACKEND_OVERLOADED,
    "validation": Reason.BACKEND_VALIDATION,
    "generation": Reason.BACKEND_GENERATION_FAILED,
    "protocol": Reason.BACKEND_PROTOCOL_ERROR,
    "unavailable": Reason.BACKEND_UNAVAILABLE,
    # A `timeout` without the call's deadline over is the backend's idle timeout.
    "timeout": Reason.BACKEND_TIMEOUT,
}


def _backend_violations(message: str, *, chat: bool) -> tuple[Violation, ...]:
    """Field violations a TGI validation message points at (best effort, may be none)."""
    fields: list[str] = []
    for name in _BACKTICKED.findall(message):
        field_path = _TGI_FIELDS.get(name)
        if field_path == "prompt" and chat:
            field_path = "chat.messages"
        if field_path is not None and field_path not in fields:
            fields.append(field_path)
    return tuple(Violation(f, message) for f in fields)


def from_backend_error(
    err: BackendError, *, tokens_sent: int, deadline_passed: bool, chat: bool = False
) -> GatewayError:
    """Map a backend failure (docs/api.md, "Errors").

    `deadline_passed`: the call's own deadline is over (a `timeout` then means the deadline,
    otherwise the backend's idle timeout). `tokens_sent`: tokens the client already received.
    """
    after = f" after {tokens_sent} tokens" if tokens_sent else ""
    text = f"backend {err.backend} failed{after}: {err.kind}: {err.message}"
    reason = _BACKEND_REASON[err.kind]
    violations: tuple[Violation, ...] = ()
    if err.kind == "validation":
        text = err.message  # the backend's words: they name the limit that was hit
        violations = _backend_violations(err.message, chat=chat)
    elif err.kind == "timeout" and deadline_passed:
        reason, text = Reason.DEADLINE_EXCEEDED, f"deadline exceeded{after}"
    return GatewayError(
        reason,
        text,
        violations=violations,
        metadata={"backend_error": err.kind},
        tokens_sent=tokens_sent,
        backend=err.backend,
    )
