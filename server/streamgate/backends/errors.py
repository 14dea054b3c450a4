"""`BackendError`: every way a backend call can fail, as one exception type."""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["RETRYABLE_KINDS", "BackendError", "BackendErrorKind"]

BackendErrorKind = Literal[
    "overloaded", "validation", "generation", "unavailable", "protocol", "timeout"
]

RETRYABLE_KINDS: Final = frozenset({"overloaded", "unavailable"})
"""Kinds where a failure before the first token says nothing about the request itself: another
replica may well serve it. (A validation or generation error would most likely repeat; a
timeout has spent the caller's time budget.)"""


class BackendError(Exception):
    """A backend call failed.

    Attributes:
        kind: `overloaded` (TGI `overloaded`, HTTP 429), `validation` (TGI `validation`, 400,
            422), `generation` (TGI `generation`/`incomplete_generation`, 424), `unavailable`
            (cannot connect, connection lost, 5xx, the stream ended without its last event),
            `protocol` (the backend sent something that is not TGI's protocol) or `timeout`
            (the request's deadline or the idle timeout between events passed).
        tokens_received: token events the stream had yielded before the failure (what
            `retryable` is decided on; 0 for calls that are not streams).
        backend: the backend's name.
        retryable: nothing was generated for the caller yet and another replica may succeed.
        status: the HTTP status when the error came with a non-200 answer.
        error_type: TGI's `error_type` when the backend sent one.
    """

    def __init__(
        self,
        kind: BackendErrorKind,
        message: str,
        *,
        tokens_received: int,
        backend: str,
        retryable: bool,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: BackendErrorKind = kind
        self.message = message
        self.tokens_received = tokens_received
        self.backend = backend
        self.retryable = retryable
        self.status = status
        self.error_type = error_type

    def __str__(self) -> str:
        return f"{self.kind} from {self.backend}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"BackendError({self.kind!r}, {self.message!r}, tokens_received="
            f"{self.tokens_received}, backend={self.backend!r}, retryable={self.retryable})"
        )
