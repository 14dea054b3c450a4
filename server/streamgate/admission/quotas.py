"""Quotas: requests and tokens per minute and concurrent streams, of a tenant or of one key.

A request reserves, on every quota it counts against, one request, an upper bound of its tokens
and one stream, all or nothing; when it ends, `Reservation.settle(used)` gives back the unused
tokens and the stream. Because a request passes only when its whole reservation is in the
bucket, and the reservation bounds its usage, the usage settled by requests admitted during any
interval of t seconds is at most tokens_per_minute * (1 + t / 60): the bucket's capacity plus
its refill. Nothing here awaits: a reservation is atomic on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from streamgate.admission.buckets import TokenBucket

__all__ = [
    "Quota",
    "QuotaExceeded",
    "QuotaKind",
    "QuotaLimits",
    "QuotaRemaining",
    "Reservation",
    "reserve",
]

QuotaKind = Literal["requests", "tokens", "streams"]


@dataclass(frozen=True)
class QuotaLimits:
    """The limits of one subject; None: no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class QuotaRemaining:
    """What is left of a quota; None where it has no limit."""

    requests: int | None
    tokens: int | None
    streams: int | None
    tokens_reset_seconds: float | None
    """Seconds until the tokens bucket is full again."""


class QuotaExceeded(Exception):
    """A request over a limit.

    Attributes:
        subject: whose limit ("tenant acme", "key acme/ci").
        kind: which limit.
        limit: its value.
        retry_after: seconds until the request would pass (None: unknown, e.g. streams).
        never: the request alone is larger than the limit; waiting cannot help.
    """

    def __init__(
        self,
        subject: str,
        kind: QuotaKind,
        limit: int,
        message: str,
        *,
        retry_after: float | None = None,
        never: bool = False,
    ) -> None:
        super().__init__(f"{subject}: {message}")
        self.subject = subject
        self.kind: QuotaKind = kind
        self.limit = limit
        self.retry_after = retry_after
        self.never = never


class Quota:
    """The limits of one subject: a requests bucket, a tokens bucket, a count of streams."""

    def __init__(
        self, subject: str, limits: QuotaLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.subject = subject
        self.limits = limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._requests = TokenBucket(rpm, clock=clock) if rpm else None
        self._tokens = TokenBucket(tpm, clock=clock) if tpm else None
        self._streams = 0

    @property
    def open_streams(self) -> int:
        """Streams holding a reservation now."""
        return self._streams

    def remaining(self) -> QuotaRemaining:
        """What is left now."""
        most = self.limits.max_concurrent_streams
        tokens = self._tokens
        return QuotaRemaining(
            requests=None if self._requests is None else max(int(self._requests.available()), 0),
            tokens=None if tokens is None else max(int(tokens.available()), 0),
            streams=None if most is None else max(most - self._streams, 0),
            tokens_reset_seconds=None if tokens is None else tokens.seconds_to_full(),
        )

    def _refusal(self, tokens: int) -> QuotaExceeded | None:
        """Why a request of `tokens` cannot pass now (None: it can)."""
        limits = self.limits
        tpm = limits.tokens_per_minute
        if tpm is not None and tokens > tpm:
            return QuotaExceeded(
                self.subject, "tokens", tpm,
                f"this request reserves {tokens} tokens (prompt + max_new_tokens), more than "
                f"the limit of {tpm} tokens per minute; lower max_new_tokens or the prompt",
                never=True,
            )  # fmt: skip
        if self._requests is not None and limits.requests_per_minute is not None:
            wait = self._requests.wait_time(1)
            if wait > 0:
                return QuotaExceeded(
                    self.subject, "requests", limits.requests_per_minute,
                    f"requests per minute limit {limits.requests_per_minute} reached "
                    f"(retry in {wait:.1f} s)",
                    retry_after=wait,
                )  # fmt: skip
        if self._tokens is not None and tpm is not None:
            wait = self._tokens.wait_time(tokens)
            if wait > 0:
                left = max(int(self._tokens.available()), 0)
                return QuotaExceeded(
                    self.subject, "tokens", tpm,
                    f"tokens per minute limit {tpm} reached; {left} tokens available, this "
                    f"request needs {tokens} (retry in {wait:.1f} s)",
                    retry_after=wait,
                )  # fmt: skip
        most = limits.max_concurrent_streams
        if most is not None and self._streams >= most:
            return QuotaExceeded(
                self.subject, "streams", most, f"{most} concurrent streams already open"
            )
        return None

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        self._streams += 1

    def _settle(self, reserved: int, used: int) -> None:
        if self._tokens is not None:
            if used <= reserved:
                self._tokens.give(reserved - used)
            else:
                self._tokens.charge(used - reserved)
        self._streams -= 1


class Reservation:
    """What one request holds on its quotas: a request, `tokens` tokens and a stream each.

    `settle(used_tokens)` gives back the unused tokens and the streams (requests are not given
    back); idempotent, for a `finally`.
    """

    def __init__(self, quotas: Sequence[Quota], tokens: int) -> None:
        self._quotas = tuple(quotas)
        self.tokens = tokens
        self._settled = False

    @property
    def settled(self) -> bool:
        """`settle` was called."""
        return self._settled

    def settle(self, used_tokens: int) -> None:
        """End the reservation with the tokens really used (more than reserved is charged)."""
        if self._settled:
            return
        self._settled = True
        for quota in self._quotas:
            quota._settle(self.tokens, used_tokens)


def reserve(quotas: Sequence[Quota], tokens: int) -> Reservation:
    """Reserve a request of `tokens` tokens on every quota, or on none.

    Raises QuotaExceeded: the first refusal that can never pass, else the one with the longest
    wait (a streams refusal, whose wait is unknown, only when no bucket refuses).
    """
    refusals = [r for r in (q._refusal(tokens) for q in quotas) if r is not None]
    if refusals:
        never = [r for r in refusals if r.never]
        if never:
            raise never[0]
        raise max(refusals, key=lambda r: -1.0 if r.retry_after is None else r.retry_after)
    for quota in quotas:
        quota._take(tokens)
    return Reservation(quotas, tokens)
