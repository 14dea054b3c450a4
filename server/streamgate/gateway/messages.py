"""Backend events → streamgate.v1 messages (Start, Delta, End, Token, the unary response) and
the call's initial metadata."""

from __future__ import annotations

from collections.abc import Sequence

from streamgate.backends import StreamDetails, StreamEvent, Token
from streamgate.gateway.context import RequestContext
from streamgate_client.v1 import generation_pb2 as pb

__all__ = [
    "delta",
    "end",
    "finish_reason",
    "initial_metadata",
    "start",
    "token",
    "unary_response",
    "visible_text",
]

_CACHE_STATUS = {
    "": pb.CACHE_STATUS_UNSPECIFIED,
    "COALESCED": pb.CACHE_STATUS_COALESCED,
    "MISS": pb.CACHE_STATUS_MISS,
    "HIT": pb.CACHE_STATUS_HIT,
    "BYPASS": pb.CACHE_STATUS_BYPASS,
}

_FINISH_REASONS = {
    "length": pb.FINISH_REASON_LENGTH,
    "eos_token": pb.FINISH_REASON_EOS_TOKEN,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
}


def visible_text(events: Sequence[StreamEvent]) -> str:
    """The text of the events' non-special tokens (TGI's clients skip special ones, e.g. EOS)."""
    if len(events) == 1:  # the common case, without building a list
        tok = events[0].token
        return "" if tok.special else tok.text
    return "".join(e.token.text for e in events if not e.token.special)


def token(event: StreamEvent) -> pb.Token:
    """One step's token with its alternatives; logprob 0 when the backend reported none."""
    message = _token(event.token)
    if event.top_tokens:
        message.top_tokens.extend(
            pb.TopToken(id=t.id, text=t.text, logprob=t.logprob or 0.0) for t in event.top_tokens
        )
    return message


def _token(t: Token) -> pb.Token:
    return pb.Token(id=t.id, text=t.text, logprob=t.logprob or 0.0, special=t.special)


def delta(events: Sequence[StreamEvent], with_tokens: bool) -> pb.Delta:
    """One Delta for the events (one step, or several merged)."""
    message = pb.Delta(text=visible_text(events))
    if with_tokens:
        message.tokens.extend(token(e) for e in events)
    return message


def finish_reason(details: StreamDetails | None) -> pb.FinishReason.ValueType:
    """TGI's finish_reason as the enum."""
    if details is None:
        return pb.FINISH_REASON_UNSPECIFIED
    return _FINISH_REASONS.get(details.finish_reason, pb.FINISH_REASON_UNSPECIFIED)


def end(
    details: StreamDetails | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    queue: float,
    time_to_first_token: float,
    total: float,
    backend_time: float,
) -> pb.End:
    """The End message; the backend's details win over the gateway's own counts."""
    if details is not None:
        if details.input_length is not None:
            prompt_tokens = details.input_length
        completion_tokens = details.generated_tokens
    return pb.End(
        finish_reason=finish_reason(details),
        usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        timings=pb.Timings(
            queue_seconds=queue,
            time_to_first_token_seconds=time_to_first_token,
            total_seconds=total,
            gateway_overhead_seconds=max(total - backend_time, 0.0),
        ),
    )


def start(
    ctx: RequestContext, model: str, backend: str, seed: int | None, input_tokens: int
) -> pb.Start:
    """The Start message of the call (route, pool and cache status from its stats)."""
    message = pb.Start(
        request_id=ctx.request_id,
        model=model,
        route=ctx.stats.route,
        pool=ctx.stats.pool,
        backend=backend,
        cache_status=_CACHE_STATUS[ctx.stats.cache],
        input_tokens=input_tokens,
    )
    if seed is not None:
        message.seed = seed
    return message


def initial_metadata(ctx: RequestContext, backend: str) -> tuple[tuple[str, str], ...]:
    """`x-request-id`, `x-route`, `x-pool`, `x-backend`, `x-cache-status` (+ `x-cache-tier`)."""
    s = ctx.stats
    metadata = (
        ("x-request-id", ctx.request_id),
        ("x-route", s.route),
        ("x-pool", s.pool),
        ("x-backend", backend),
        ("x-cache-status", s.cache),
    )
    return (*metadata, ("x-cache-tier", s.cache_tier)) if s.cache_tier else metadata


def unary_response(
    ctx: RequestContext,
    events: Sequence[StreamEvent],
    *,
    model: str,
    backend: str,
    with_tokens: bool,
    requested_seed: int | None,
    first_at: float,
    now: float,
    backend_time: float,
) -> pb.GenerateResponse:
    """The unary response of a finished generation (fresh, joined or cached); fills the call's
    stats."""
    stats = ctx.stats
    stats.output_tokens = len(events)
    stats.first_token_at = first_at
    details = events[-1].details
    stats.finish_reason = details.finish_reason if details else ""
    stats.input_tokens = (details.input_length or 0) if details else 0
    seed = details.seed if details is not None and details.seed is not None else requested_seed
    response = pb.GenerateResponse(
        start=start(ctx, model, backend, seed, stats.input_tokens),
        text=visible_text(events),
        end=end(
            details,
            prompt_tokens=stats.input_tokens,
            completion_tokens=len(events),
            queue=stats.queue_seconds,
            time_to_first_token=first_at - ctx.started,
            total=now - ctx.started,
            backend_time=backend_time,
        ),
    )
    if with_tokens:
        response.tokens.extend(token(e) for e in events)
    return response
