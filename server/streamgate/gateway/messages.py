"""Backend events → streamgate.v1 messages (Start, Delta, End, Token)."""

from __future__ import annotations

from collections.abc import Sequence

from streamgate.api.v1 import generation_pb2 as pb
from streamgate.backends import StreamDetails, StreamEvent, Token

__all__ = ["delta", "end", "finish_reason", "token", "visible_text"]

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
