"""Stage 8, upstream: pick a replica of the pool, send the request, wait for its first token;
retry elsewhere before it.

A request is committed to a backend when that backend's first token arrives: before that no
token has reached the client, so a retryable failure (`overloaded`, `unavailable`) is tried
again on another replica, up to `limits.max_attempts` backends and within the caller's
deadline. When no other replica is left to try, the backend is certain as soon as the request
is sent: `Opening.certain()` says so, and the call's Start can go out while it prefills.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from streamgate.backends import BackendError
from streamgate.config import LimitsConfig
from streamgate.gateway.pipeline.errors import GatewayError, Reason, from_backend_error
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.routing import Lease, Pool, Replica
from streamgate.tgi import StreamEvent

__all__ = ["TOKENIZE_WAIT_SECONDS", "Opening", "PromptTokens", "Upstream", "open_upstream"]

TOKENIZE_WAIT_SECONDS = 0.5
"""How long Start may wait for /tokenize."""

OnFailure = Callable[[Replica, BackendError], None]
"""Told of every failed backend request (metrics, circuit breaker, health re-check)."""


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


@dataclass(eq=False)
class Upstream:
    """An open backend stream whose first event has arrived. `close()` when done with it."""

    replica: Replica
    stream: AsyncGenerator[StreamEvent, None]
    first: StreamEvent
    sent_at: float
    """time.monotonic() when the request was sent (the successful attempt)."""
    first_at: float
    """time.monotonic() when the first event arrived."""
    failed_time: float
    """Seconds spent on failed attempts before this one."""
    attempts: int
    prompt_tokens: PromptTokens
    lease: Lease
    """Counts the stream among the replica's in flight until it is closed."""

    def backend_time(self, last_arrival: float) -> float:
        """Seconds of the request that were the backend's: failed attempts, then from sending
        the request to the arrival of its last event so far (`last_arrival`)."""
        return self.failed_time + max(last_arrival - self.sent_at, 0.0)

    async def close(self) -> None:
        """Close the stream (the backend drops the sequence if it is not finished); idempotent."""
        self.prompt_tokens.cancel()
        try:
            await self.stream.aclose()
        finally:
            self.lease.release()


async def open_upstream(
    pool: Pool,
    prepared: PreparedRequest,
    call: Call,
    limits: LimitsConfig,
    *,
    on_failure: OnFailure,
    on_final: Callable[[Replica, PromptTokens], None] | None = None,
) -> Upstream:
    """Open a stream on a replica of `pool` and wait for its first event.

    `on_final` is told, right after the request is sent, when this replica is the last one that
    can be tried (no other healthy replica, or the last attempt): the backend that serves the
    call is certain then, before its first token. The prompt's token count is asked of the
    first replica's /tokenize alongside, when it has one.
    Raises GatewayError: NO_HEALTHY_BACKEND, the mapped backend error of the last attempt, or
    DEADLINE_EXCEEDED.
    """
    namespace = call.authenticated.tenant.cache_namespace
    pick = pool.request(prepared.inputs, salt=f"{pool.name}\0{namespace}")
    tried: list[Replica] = []
    waited = 0.0
    tokens = PromptTokens()
    last: BackendError | None = None
    try:
        while len(tried) < limits.max_attempts:
            if tried and not await _back_off(len(tried), limits, call):
                break  # the deadline leaves no time for another attempt
            replica = pool.pick(pick, exclude=tried)
            if replica is None:
                break
            tried.append(replica)
            remaining = call.remaining()
            if remaining is not None and remaining <= 0:
                raise _deadline(replica)
            final = len(tried) == limits.max_attempts or not pool.has_alternative(tried)
            stream = replica.backend.generate_stream(
                prepared.inputs, prepared.parameters, timeout=remaining, request_id=call.request_id
            )
            if len(tried) == 1 and replica.supports_tokenize is not False:
                tokens = PromptTokens(asyncio.create_task(_tokenize(replica, prepared.inputs)))
            lease = replica.lease()
            sent = time.monotonic()
            if final and on_final is not None:
                on_final(replica, tokens)
            try:
                first = await anext(stream)
            except BackendError as err:
                lease.release()
                await stream.aclose()
                waited += time.monotonic() - sent
                on_failure(replica, err)
                last = err
                if err.retryable and not final:
                    continue
                break
            except BaseException:
                lease.release()
                await stream.aclose()
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
                lease=lease,
            )
            tokens = PromptTokens()  # the Upstream owns it now
            return upstream
    finally:
        tokens.cancel()
    if last is not None:
        raise from_backend_error(
            last, tokens_sent=0, deadline_passed=call.deadline_passed(), chat=prepared.chat
        )
    if not tried:
        route = call.record.route
        raise GatewayError(
            Reason.NO_HEALTHY_BACKEND,
            f"no healthy backend for route '{route.name if route else ''}' (pool '{pool.name}')",
        )
    raise GatewayError(  # pragma: no cover - a failure always sets `last`
        Reason.BACKEND_UNAVAILABLE, "no backend answered"
    )


class Opening:
    """`open_upstream` in a task of its own, so that the call can say who serves it (Start)
    while the backend prefills. `certain()`, then `opened()`; `cancel()` in a `finally`."""

    def __init__(
        self,
        pool: Pool,
        prepared: PreparedRequest,
        call: Call,
        limits: LimitsConfig,
        on_failure: OnFailure,
    ) -> None:
        self._certain: asyncio.Future[tuple[Replica, PromptTokens]] = (
            asyncio.get_running_loop().create_future()
        )
        self._task = asyncio.create_task(
            open_upstream(
                pool, prepared, call, limits, on_failure=on_failure, on_final=self._announce
            ),
            name="open-upstream",
        )
        self._taken = False

    def _announce(self, replica: Replica, tokens: PromptTokens) -> None:
        if not self._certain.done():
            self._certain.set_result((replica, tokens))

    async def certain(self) -> tuple[Replica, int | None]:
        """The replica that serves the call and the prompt's token count (if it could be asked
        in time), once the replica is certain: the last one that can be tried was sent the
        request, or a replica's first event arrived. Raises what opening raised before."""
        either: list[asyncio.Future[Any]] = [self._task, self._certain]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self._certain.done():
            replica, tokens = self._certain.result()
        else:
            upstream = self._task.result()
            replica, tokens = upstream.replica, upstream.prompt_tokens
        return replica, await tokens.get()

    async def opened(self) -> Upstream:
        """The open upstream, the caller's to close from now on. A caller cancelled while it
        waits leaves the opening going (another may take it over): `cancel()` stops it."""
        upstream = await asyncio.shield(self._task)
        self._taken = True
        return upstream

    async def cancel(self) -> None:
        """Stop opening, and close what was opened if nobody took it (idempotent)."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait({self._task})
        if not self._taken and not self._task.cancelled() and self._task.exception() is None:
            self._taken = True
            await self._task.result().close()


async def _tokenize(replica: Replica, inputs: str) -> int | None:
    with contextlib.suppress(BackendError):
        count = await replica.backend.tokenize(inputs)
        if count is None:
            replica.supports_tokenize = False  # learnt: skip the round trip from now on
        return count
    return None


async def _back_off(attempt: int, limits: LimitsConfig, call: Call) -> bool:
    """Wait before attempt `attempt + 1`: backoff * 2^(attempt-1), at most the max, times a
    random 0.5-1; False when the caller's deadline would pass first."""
    base, most = limits.retry_backoff_seconds, limits.retry_backoff_max_seconds
    delay = min(base * 2 ** (attempt - 1), most) * random.uniform(0.5, 1.0)
    remaining = call.remaining()
    if remaining is not None and remaining <= delay:
        return False
    if delay > 0:
        await asyncio.sleep(delay)
    return True


def _deadline(replica: Replica) -> GatewayError:
    return GatewayError(
        Reason.DEADLINE_EXCEEDED,
        "deadline exceeded before a backend answered",
        backend=replica.name,
    )
