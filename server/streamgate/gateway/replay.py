"""Answers from a flight: an identical generation under way (single flight), or a cached answer
(a flight that has already finished), written as the same stream or unary response.

A stream gets Start, one Delta per original backend step (live while the flight runs), then End
with the original usage and finish reason; a unary call gets the whole answer once the flight
is over. A failed flight fails the call, with the tokens this call received.
"""

from __future__ import annotations

import time

import grpc

from streamgate.backends import StreamEvent
from streamgate.cache import CachedResponse
from streamgate.gateway import messages
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError
from streamgate.gateway.flight import Flight, FlightMeta, abandoned
from streamgate.gateway.prepare import PreparedRequest
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["cached", "input_tokens", "stream_from", "unary_from"]

StreamContext = grpc.aio.ServicerContext[pb.GenerateStreamRequest, pb.GenerateStreamResponse]
UnaryContext = grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse]


def cached(hit: CachedResponse) -> Flight:
    """A cached answer as a finished flight."""
    meta = FlightMeta(hit.model, hit.backend, hit.pool, hit.input_tokens, hit.seed)
    return Flight.finished(meta, hit.events)


async def stream_from(
    flight: Flight, context: StreamContext, ctx: RequestContext, prepared: PreparedRequest
) -> None:
    """Start, every event of `flight` from its first (as they come), End."""
    s = ctx.stats
    while flight.meta is None and not flight.done:
        await flight.signal().wait()
    if flight.meta is None:
        raise flight.error or abandoned()
    meta = flight.meta
    s.pool, s.backend, s.model, s.input_tokens = (
        meta.pool, meta.backend, meta.model, meta.input_tokens
    )  # fmt: skip
    await context.send_initial_metadata(messages.initial_metadata(ctx, meta.backend))
    start = messages.start(ctx, meta.model, meta.backend, meta.seed, meta.input_tokens)
    await context.write(pb.GenerateStreamResponse(start=start))
    sent = 0
    while True:
        changed = flight.signal()
        while sent < len(flight.events):
            delta = messages.delta([flight.events[sent]], prepared.tokens)
            await context.write(pb.GenerateStreamResponse(delta=delta))
            sent += 1
            s.output_tokens = sent
            if s.first_token_at is None:
                s.first_token_at = time.monotonic()
        if flight.done:
            break
        await changed.wait()
    if flight.error is not None:
        raise _passed_on(flight.error, sent)
    last = flight.events[-1]
    s.finish_reason = last.details.finish_reason if last.details else ""
    s.input_tokens = input_tokens(last, meta.input_tokens)
    now = time.monotonic()
    end = messages.end(
        last.details,
        prompt_tokens=s.input_tokens,
        completion_tokens=len(flight.events),
        queue=0.0,
        time_to_first_token=(s.first_token_at or now) - ctx.started,
        total=now - ctx.started,
        backend_time=0.0,
    )
    await context.write(pb.GenerateStreamResponse(end=end))


async def unary_from(
    flight: Flight, context: UnaryContext, ctx: RequestContext, prepared: PreparedRequest
) -> pb.GenerateResponse:
    """The whole answer of `flight`, once it is over."""
    while not flight.done:
        await flight.signal().wait()
    if flight.error is not None or flight.meta is None:
        raise _passed_on(flight.error or abandoned(), 0)
    meta = flight.meta
    s = ctx.stats
    s.pool, s.backend, s.model = meta.pool, meta.backend, meta.model
    now = time.monotonic()
    response = messages.unary_response(
        ctx, flight.events, model=meta.model, backend=meta.backend, with_tokens=prepared.tokens,
        requested_seed=prepared.seed, first_at=now, now=now, backend_time=0.0,
    )  # fmt: skip
    await context.send_initial_metadata(messages.initial_metadata(ctx, meta.backend))
    return response


def input_tokens(last: StreamEvent, known: int) -> int:
    """The prompt's size: as the backend reports it at the end, or as known before."""
    if last.details is not None and last.details.input_length is not None:
        return last.details.input_length
    return known


def _passed_on(err: GatewayError, tokens_sent: int) -> GatewayError:
    """A generation's failure as a joined caller's, who received `tokens_sent` tokens."""
    return GatewayError(
        err.code, err.reason, err.message, violations=err.violations, metadata=err.metadata,
        tokens_sent=tokens_sent, backend=err.backend, retry_after=err.retry_after,
    )  # fmt: skip
