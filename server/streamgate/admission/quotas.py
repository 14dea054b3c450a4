"""Quotas: requests and tokens per minute and concurrent streams, of a tenant or of one key.

A request reserves, on every quota it counts against, one request, an upper bound of its tokens
and one stream, all or nothing; when it ends, `Reservation.settle(used)` gives back the unused
tokens and the stream. Nothing here awaits: a reservation is atomic on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
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

    def __post_init__(self) -> None:
        # 0 would be ambiguous (no limit, or nothing allowed?): the config says null for none.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value < 1:
                raise ValueError(f"{f.name} must be None or at least 1, not {value}")


@dataclass(frozen=True)
class QuotaRemaining:
    """What is left of a quota; None where it has no limit."""

    requests: int | None
    tokens: int | None
    streams: int | None
    tokens_reset_seconds: float | None
    """Seconds until the tokens bucket is full again."""


class QuotaExceeded(Exception):
    """A request over a limit; `str()` is "<subject>: <message>".

    Attributes:
        subject: whose limit ("tenant acme", "key acme/ci").
        kind: which limit.
        limit: its value.
        retry_after: seconds until the request would pass (None: unknown, e.g. streams, or
            never).
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
    """The limits of one subject: a requests bucket, a tokens bucket, a count of open streams."""

    def __init__(
        self, subject: str, limits: QuotaLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.subject = subject
        self.limits = limits
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._requests = None if rpm is None else TokenBucket(rpm, clock=clock)
        self._tokens = None if tpm is None else TokenBucket(tpm, clock=clock)
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

    def _refusals(self, tokens: int) -> Iterator[QuotaExceeded]:
        """Every limit a request of `tokens` tokens is over now (none: it passes)."""
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        if self._requests is not None and rpm is not None:
            wait = self._requests.wait_time(1)
            if wait > 0:
                yield QuotaExceeded(
                    self.subject,
                    "requests",
                    rpm,
                    f"requests per minute limit {rpm} reached (retry in {wait:.1f} s)",
                    retry_after=wait,
                )
        if self._tokens is not None and tpm is not None:
            wait = self._tokens.wait_time(tokens)
            if tokens > tpm:
                yield QuotaExceeded(
                    self.subject,
                    "tokens",
                    tpm,
                    f"this request reserves {tokens} tokens (prompt + max_new_tokens), more "
                    f"than the limit of {tpm} tokens per minute; lower max_new_tokens or the "
                    "prompt",
                    never=True,
                )
            elif wait > 0:
                left = max(int(self._tokens.available()), 0)
                yield QuotaExceeded(
                    self.subject,
                    "tokens",
                    tpm,
                    f"tokens per minute limit {tpm} reached; {left} tokens available, this "
                    f"request needs {tokens} (retry in {wait:.1f} s)",
                    retry_after=wait,
                )
        most = self.limits.max_concurrent_streams
        if most is not None and self._streams >= most:
            yield QuotaExceeded(
                self.subject,
                "streams",
                most,
                f"concurrent streams limit {most} reached; retry when one of them ends",
            )

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
    """What one request holds: 1 request, `tokens` tokens and one stream slot on each quota.

    `settle(used_tokens)` ends it: idempotent, call it exactly once in a `finally`. The bound
    it keeps is the one of `reserve`.
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
        """Give back `tokens - used_tokens` to each tokens bucket (charge the excess when more
        was used) and the stream slots; requests are never given back. Later calls: no-op."""
        if self._settled:
            return
        self._settled = True
        for quota in self._quotas:
            quota._settle(self.tokens, used_tokens)


def reserve(quotas: Sequence[Quota], tokens: int) -> Reservation:
    """Reserve one request, `tokens` tokens and one stream on every quota, or on none.

    Every quota is checked before any is taken from. Raises QuotaExceeded: a refusal that can
    never pass (`never`) first, else the one with the longest `retry_after` (a streams
    refusal, whose wait is unknown, only when no bucket refuses), the first of equals.

    The bound, with C = tokens_per_minute and reservations that bound their usage: a request
    passes only when its whole reservation is in the bucket, so the tokens used by the
    requests admitted during any t seconds are at most C + C * t / 60 (the bucket's capacity
    plus its refill) plus the unused tokens given back during those t seconds by requests
    admitted before them. From an idle start (nothing reserved) the bound is exactly
    C + C * t / 60. The extra term is real: a refund returns tokens taken from the bucket long
    ago, after the bucket has refilled meanwhile.
    """
    if tokens < 0:
        raise ValueError(f"tokens must not be negative, not {tokens}")
    refusals = [r for q in quotas for r in q._refusals(tokens)]
    if refusals:
        never = [r for r in refusals if r.never]
        if never:
            raise never[0]
        raise max(refusals, key=lambda r: -1.0 if r.retry_after is None else r.retry_after)
    for quota in quotas:
        quota._take(tokens)
    return Reservation(quotas, tokens)
