"""The pipeline's events as streamgate.v1 messages, and the response metadata of a call: what
every door (gRPC, and Connect for browsers) sends."""

from __future__ import annotations

from collections.abc import Sequence

from streamgate.gateway.pipeline.events import Answer, Delta, End, Event, Start, cache_name
from streamgate.tgi import StreamEvent, Token
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["initial_metadata", "stream_message", "unary_response"]

_FINISH_REASONS = {
    "length": pb.FINISH_REASON_LENGTH,
    "eos_token": pb.FINISH_REASON_EOS_TOKEN,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
}


def _token(t: Token) -> pb.Token:
    return pb.Token(id=t.id, text=t.text, logprob=t.logprob or 0.0, special=t.special)


def _tokens(steps: Sequence[StreamEvent]) -> list[pb.Token]:
    """Each step's token with its alternatives; logprob 0 when the backend reported none."""
    out = []
    for step in steps:
        message = _token(step.token)
        if step.top_tokens:
            message.top_tokens.extend(
                pb.TopToken(id=t.id, text=t.text, logprob=t.logprob or 0.0) for t in step.top_tokens
            )
        out.append(message)
    return out


def _start(s: Start) -> pb.Start:
    message = pb.Start(
        request_id=s.request_id,
        model=s.model,
        route=s.route,
        pool=s.pool,
        backend=s.backend,
        cache_status=s.cache_status,
        input_tokens=s.input_tokens,
    )
    if s.seed is not None:
        message.seed = s.seed
    return message


def _delta(d: Delta) -> pb.Delta:
    message = pb.Delta(text=d.text)
    if d.steps:
        message.tokens.extend(_tokens(d.steps))
    return message


def _end(e: End) -> pb.End:
    return pb.End(
        finish_reason=_FINISH_REASONS.get(e.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
        usage=pb.Usage(prompt_tokens=e.prompt_tokens, completion_tokens=e.completion_tokens),
        timings=pb.Timings(
            queue_seconds=e.queue_seconds,
            time_to_first_token_seconds=e.time_to_first_token_seconds,
            total_seconds=e.total_seconds,
            gateway_overhead_seconds=e.gateway_overhead_seconds,
        ),
    )


def stream_message(event: Event) -> pb.GenerateStreamResponse:
    """One message of GenerateStream."""
    if isinstance(event, Delta):  # the common case first
        return pb.GenerateStreamResponse(delta=_delta(event))
    if isinstance(event, Start):
        return pb.GenerateStreamResponse(start=_start(event))
    return pb.GenerateStreamResponse(end=_end(event))


def unary_response(answer: Answer) -> pb.GenerateResponse:
    """The response of Generate."""
    response = pb.GenerateResponse(
        start=_start(answer.start), text=answer.text, end=_end(answer.end)
    )
    if answer.steps:
        response.tokens.extend(_tokens(answer.steps))
    return response


def initial_metadata(start: Start) -> tuple[tuple[str, str], ...]:
    """`x-request-id`, `x-route`, `x-pool`, `x-backend`, `x-cache-status` (+ `x-cache-tier` for
    a hit): the response headers of a generation call."""
    metadata = (
        ("x-request-id", start.request_id),
        ("x-route", start.route),
        ("x-pool", start.pool),
        ("x-backend", start.backend),
        ("x-cache-status", cache_name(start.cache_status)),
    )
    return (*metadata, ("x-cache-tier", start.cache_tier)) if start.cache_tier else metadata
