"""Opening the backend stream: pick a replica, send, wait for the first token; retry elsewhere.

A request is committed to a backend when that backend's first token arrives: before that no token
has reached the client, so a retryable failure (`overloaded`, `unavailable`) is tried again on
another replica of the route, up to `max_attempts` backends and within the caller's deadline.
When no other replica is left to try, the backend is certain as soon as the request is sent:
`on_final` says so, and the call's Start can go out while the backend prefills.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from streamgate.backends import BackendError, StreamEvent, TGIStream
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason, from_backend_error
from streamgate.gateway.prepare import PreparedRequest
from streamgate.routing import PickRequest, Pool, Replica

__all__ = ["TOKENIZE_WAIT_SECONDS", "PromptTokens", "Upstream", "open_upstream"]

TOKENIZE_WAIT_SECONDS = 0.5
"""How long Start may wait for /tokenize."""


class PromptTokens:
    """The prompt's token count, asked of a backend's /tokenize alongside the generate request.

    Both run on the same backend and tokenizing is part of the generate request too, so the
    count is normally there before the first token. Start is never held back for long by it:
    after `TOKENIZE_WAIT_SECONDS` the count is given up on (End carries the backend's own).
    """

    def __init__(self, task: asyncio.Task[int | None] | None = None) -> None:
        self._task = task

    async def get(self) -> int | None:
        """The count (None: unknown, not asked, or too slow). Once only."""
        task, self._task = self._task, None
        if task is None:
            return None
        try:
            # wait() neither raises the task's errors nor cancels it on timeout.
            done, _ = await asyncio.wait({task}, timeout=TOKENIZE_WAIT_SECONDS)
        finally:
            if not task.done():
                task.cancel()  # too slow (or this call is cancelled): not worth waiting for
        if not done or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def cancel(self) -> None:
        """Stop asking (idempotent)."""
        if self._task is not None:
            self._task.cancel()


@dataclass
class Upstream:
    """An open backend stream whose first event has arrived."""

    replica: Replica
    stream: TGIStream
    first: StreamEvent
    sent_at: float
    """time.monotonic() when the request was sent (the successful attempt)."""
    first_at: float
    """time.monotonic() when the first event arrived."""
    failed_time: float
    """Seconds spent on failed attempts before this one."""
    attempts: int
    prompt_tokens: PromptTokens
    announced: bool
    """`on_final` was called for this replica (before its first event)."""
    _closed: bool = field(default=False, repr=False)

    def backend_time(self, last_arrival: float) -> float:
        """Seconds of the request that were the backend's: failed attempts, then from sending
        the request to the arrival of its last event so far (`last_arrival`)."""
        return self.failed_time + max(last_arrival - self.sent_at, 0.0)

    def close(self) -> None:
        """Close the stream (the backend drops the sequence if it is not finished)."""
        if self._closed:
            return
        self._closed = True
        self.stream.close()
        self.replica.in_flight -= 1
        self.prompt_tokens.cancel()


async def open_upstream(
    pool: Pool,
    prepared: PreparedRequest,
    ctx: RequestContext,
    *,
    max_attempts: int,
    count_tokens: bool,
    on_failure: Callable[[Replica, BackendError], None],
    on_final: Callable[[Replica, PromptTokens], None] | None = None,
    pick: PickRequest | None = None,
    backoff: tuple[float, float] = (0.0, 0.0),
) -> Upstream:
    """Open a stream on a replica of `pool` and wait for its first event.

    `pick`: what the route's picker looks at (the prompt's prefix hashes).
    `backoff`: (base, max) seconds of the exponential wait with jitter between attempts.
    `count_tokens`: also ask the first replica's /tokenize for the prompt's token count.
    `on_failure`: told of every backend failure (metrics, health re-checks).
    `on_final`: told, right after the request is sent, when this replica is the last one that
    can be tried (no other healthy replica, or the last attempt): the backend that serves the
    call is certain then, before its first token.
    Raises GatewayError: NO_HEALTHY_BACKEND, the mapped backend error of the last attempt, or
    DEADLINE_EXCEEDED.
    """
    tried: list[Replica] = []
    waited = 0.0
    tokens = PromptTokens()
    asked = False
    last: BackendError | None = None
    try:
        while len(tried) < max_attempts:
            if tried and not await _back_off(len(tried), backoff, ctx):
                break  # the deadline leaves no time for another attempt
            replica = pool.pick(pick or PickRequest(), exclude=tried)
            if replica is None:
                break
            tried.append(replica)
            remaining = ctx.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline(tried)
            final = len(tried) == max_attempts or not pool.has_alternative(tried)
            stream = replica.backend.generate_stream(
                prepared.inputs, prepared.parameters, timeout=remaining, request_id=ctx.request_id
            )
            if count_tokens and not asked and replica.supports_tokenize is not False:
                asked = True
                tokens = PromptTokens(asyncio.create_task(_tokenize(replica, prepared.inputs)))
            replica.in_flight += 1
            sent = time.monotonic()
            if final and on_final is not None:
                # Its task runs once this one waits: after the request went out.
                on_final(replica, tokens)
            try:
                first = await anext(stream)
            except BackendError as err:
                replica.in_flight -= 1
                stream.close()
                waited += time.monotonic() - sent
                on_failure(replica, err)
                last = err
                if err.retryable and not final:
                    continue
                break
            except BaseException:
                replica.in_flight -= 1
                stream.close()
                raise
            replica.circuit.record_success()
            upstream = Upstream(
                replica=replica,
                stream=stream,
                first=first,
                sent_at=sent,
                first_at=time.monotonic(),
                failed_time=waited,
                attempts=len(tried),
                prompt_tokens=tokens,
                announced=final and on_final is not None,
            )
            tokens = PromptTokens()  # the Upstream owns it now
            return upstream
    finally:
        tokens.cancel()
    if last is not None:
        raise from_backend_error(
            last, tokens_sent=0, deadline_passed=ctx.deadline_passed(), chat=prepared.chat
        )
    if not tried:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.NO_HEALTHY_BACKEND,
            f"no healthy backend for route '{ctx.stats.route}' (pool '{pool.name}')",
        )
    raise GatewayError(  # pragma: no cover - a failure always sets `last`
        grpc.StatusCode.UNAVAILABLE, Reason.BACKEND_UNAVAILABLE, "no backend answered"
    )


async def _tokenize(replica: Replica, inputs: str) -> int | None:
    with contextlib.suppress(BackendError):
        count = await replica.backend.tokenize(inputs)
        if count is None:
            replica.supports_tokenize = False  # learnt: skip the round trip from now on
        return count
    return None


async def _back_off(attempt: int, backoff: tuple[float, float], ctx: RequestContext) -> bool:
    """Wait before attempt `attempt + 1`; False when the caller's deadline would pass first."""
    base, most = backoff
    delay = min(base * 2 ** (attempt - 1), most) * random.uniform(0.5, 1.0)
    remaining = ctx.remaining()
    if remaining is not None and remaining <= delay:
        return False
    if delay > 0:
        await asyncio.sleep(delay)
    return True


def _deadline(tried: list[Replica]) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        "deadline exceeded before a backend answered",
        backend=tried[-1].name if tried else None,
    )
