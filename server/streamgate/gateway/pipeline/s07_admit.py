"""Stage 7, admit: may this request run now? Quotas first (requests, tokens, streams per tenant
and key), then a slot among the gateway's upstream streams (the priority queue).

A request reserves an upper bound of its tokens before it runs, and `Admission.finish` settles
the reservation with what it really used, however the call ended. The bound holds when the
request's prompt and new tokens are bounded:

- prompt: its UTF-8 bytes + 2 (a token is never shorter than a byte with the byte-level and
  byte-fallback tokenizers of TGI's models; + BOS and a prefix space), capped by `truncate` and
  the route's max_input_tokens;
- prompt + new: capped by the route's max_total_tokens (TGI refuses more); with no
  max_new_tokens and no known max_total_tokens, `UNBOUNDED_NEW_TOKENS` is reserved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamgate.admission import (
    AdmissionQueue,
    QueueFull,
    QueueTimeout,
    QuotaExceeded,
    Reservation,
    Slot,
    reserve,
)
from streamgate.gateway.pipeline.errors import NO_RETRY, GatewayError, Reason
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.routing import Route
from streamgate.tenancy import Caller

__all__ = [
    "UNBOUNDED_NEW_TOKENS",
    "Admission",
    "TokenBudget",
    "admit",
    "quota_metadata",
    "token_budget",
]

UNBOUNDED_NEW_TOKENS = 4096
"""New tokens reserved when neither the request nor the backend bounds them."""
_PROMPT_EXTRA_TOKENS = 2


@dataclass(frozen=True)
class TokenBudget:
    """Upper bounds of a request's tokens."""

    prompt: int
    total: int
    """Prompt + generated: what the request reserves."""


def token_budget(prepared: PreparedRequest, route: Route) -> TokenBudget:
    """The bounds of the module doc."""
    prompt = len(prepared.inputs.encode("utf-8")) + _PROMPT_EXTRA_TOKENS
    for cap in (prepared.parameters.truncate, route.max_input_tokens):
        if cap:
            prompt = min(prompt, cap)
    most = route.max_total_tokens
    new = prepared.parameters.max_new_tokens
    if new is None:
        total = most if most is not None else prompt + UNBOUNDED_NEW_TOKENS
    else:
        total = min(prompt + new, most) if most is not None else prompt + new
    return TokenBudget(prompt=prompt, total=total)


@dataclass
class Admission:
    """What an admitted request holds; `finish` gives it back (idempotent)."""

    budget: TokenBudget
    reservation: Reservation
    slot: Slot

    @property
    def queue_seconds(self) -> float:
        """Time spent waiting for the slot."""
        return self.slot.waited

    def finish(self, prompt_tokens: int | None, received_tokens: int) -> None:
        """Free the slot and settle the reservation with the tokens really used: the prompt
        counts once the backend worked on it (its size, if not reported, is bounded by the
        reservation's estimate), plus the tokens received."""
        prompt = (prompt_tokens or self.budget.prompt) if received_tokens else 0
        self.slot.release()
        self.reservation.settle(prompt + received_tokens)


async def admit(call: Call, budget: TokenBudget, queue: AdmissionQueue, priority: int) -> Admission:
    """Reserve the budget on the caller's quotas, then wait for an upstream slot.

    Raises GatewayError: RESOURCE_EXHAUSTED (RATE_LIMITED, TOO_MANY_STREAMS, REQUEST_OVER_QUOTA,
    QUEUE_FULL, QUEUE_TIMEOUT) or DEADLINE_EXCEEDED (the deadline passed while queued). Nothing
    is held after a failure or a cancellation.
    """
    try:
        reservation = reserve(call.authenticated.quotas, budget.total)
    except QuotaExceeded as err:
        raise _quota_error(err) from None
    try:
        slot = await queue.acquire(priority, deadline_in=call.remaining())
    except QueueFull as err:
        reservation.settle(0)
        raise GatewayError(
            Reason.QUEUE_FULL,
            f"the gateway is at capacity: {err.queued} requests are already waiting",
            retry_after=err.retry_after,
        ) from None
    except QueueTimeout as err:
        reservation.settle(0)
        if call.deadline_passed():
            raise GatewayError(
                Reason.DEADLINE_EXCEEDED,
                f"deadline exceeded after {err.waited:.3f} s in the admission queue",
            ) from None
        raise GatewayError(
            Reason.QUEUE_TIMEOUT,
            f"no upstream slot freed within {err.waited:.3f} s",
            retry_after=err.retry_after,
        ) from None
    except BaseException:  # cancelled while queued
        reservation.settle(0)
        raise
    return Admission(budget, reservation, slot)


def quota_metadata(caller: Caller) -> list[tuple[str, str]]:
    """`x-ratelimit-*` trailing metadata: the tightest of the caller's quotas."""
    left = [q.remaining() for q in caller.quotas]
    out: list[tuple[str, str]] = []
    requests = [r.requests for r in left if r.requests is not None]
    if requests:
        out.append(("x-ratelimit-remaining-requests", str(min(requests))))
    tokens = [r.tokens for r in left if r.tokens is not None]
    if tokens:
        out.append(("x-ratelimit-remaining-tokens", str(min(tokens))))
    resets = [r.tokens_reset_seconds for r in left if r.tokens_reset_seconds is not None]
    if resets:
        out.append(("x-ratelimit-reset-tokens", f"{max(resets):.3f}"))
    return out


def _quota_error(err: QuotaExceeded) -> GatewayError:
    """A quota refusal as RESOURCE_EXHAUSTED with QuotaFailure (and RetryInfo when waiting can
    help)."""
    if err.never:
        reason, retry = Reason.REQUEST_OVER_QUOTA, NO_RETRY
    elif err.kind == "streams":
        reason, retry = Reason.TOO_MANY_STREAMS, 1.0
    else:
        reason = Reason.RATE_LIMITED
        retry = err.retry_after if err.retry_after is not None else 1.0
    if not math.isfinite(retry):
        retry = NO_RETRY
    return GatewayError(
        reason,
        str(err),
        metadata={"quota": err.kind, "limit": str(err.limit)},
        retry_after=retry,
        quota_violations=((err.subject, str(err)),),
    )
