"""Stage 10, respond: an answer's source (its Origin, then batches of backend events) as the
call's events: Start, one Delta per batch, End. A unary call collects them into one Answer.

Every answer goes through here, whatever produced it: a generation this call leads, an
identical one it joined, or a cached one. End's usage comes from the backend's details on the
last event when it has them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamgate.gateway.pipeline.errors import GatewayError, internal_error
from streamgate.gateway.pipeline.events import Answer, Delta, End, Event, Start
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.gateway.pipeline.s06_coalesce import Origin, Produced
from streamgate.tgi import StreamEvent
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["Delivery", "Source", "collect", "respond", "visible_text"]


class Source(Protocol):
    """Where an answer comes from: its Origin first, then batches of events; closed by its
    reader."""

    def __aiter__(self) -> AsyncIterator[Produced]: ...

    async def aclose(self) -> None: ...


@dataclass
class Delivery:
    """What the call handed to its transport so far."""

    tokens: int = 0
    merged_events: int = 0
    """Backend events that shared a Delta with another (the client was reading slower)."""
    first_token_at: float | None = None
    """time.monotonic() when the first Delta was handed over."""


def visible_text(events: Sequence[StreamEvent]) -> str:
    """The text of the events' non-special tokens (TGI's clients skip special ones, e.g. EOS)."""
    if len(events) == 1:  # the common case, without building a list
        tok = events[0].token
        return "" if tok.special else tok.text
    return "".join(e.token.text for e in events if not e.token.special)


async def respond(
    source: Source, call: Call, prepared: PreparedRequest
) -> AsyncGenerator[Event, None]:
    """Start, a Delta per batch, End (see the module doc); records what it delivered. A failure
    of the source says how many tokens this caller received."""
    record = call.record
    delivery = record.delivery = Delivery()
    try:
        async with contextlib.aclosing(source):
            produced = aiter(source)
            origin = await anext(produced)
            if not isinstance(origin, Origin):  # pragma: no cover - every source starts so
                raise internal_error("an answer without its origin")
            record.origin = origin
            yield Start(
                request_id=call.request_id,
                model=origin.model,
                route=record.route.name if record.route else "",
                pool=origin.pool,
                backend=origin.backend,
                cache_status=record.cache,
                cache_tier=record.cache_tier if record.cache == pb.CACHE_STATUS_HIT else "",
                input_tokens=origin.input_tokens,
                seed=origin.seed,
            )
            last: StreamEvent | None = None
            async for batch in produced:
                assert not isinstance(batch, Origin)
                yield Delta(visible_text(batch), tuple(batch) if prepared.tokens else ())
                # Resumed: the transport has taken the Delta.
                delivery.tokens += len(batch)
                if len(batch) > 1:
                    delivery.merged_events += len(batch)
                if delivery.first_token_at is None:
                    delivery.first_token_at = time.monotonic()
                last = batch[-1]
    except GatewayError as err:
        if err.tokens_sent is None:
            raise
        # The count of this caller, who may have joined the generation that failed.
        raise err.received(call.tokens_sent()) from None
    if last is None or not last.final:  # pragma: no cover - sources raise instead
        raise internal_error("the answer ended without its last event")
    record.end = end = _end(call, origin, last, delivery)
    yield end


def _end(call: Call, origin: Origin, last: StreamEvent, delivery: Delivery) -> End:
    """The End of an answer: the backend's details win over the gateway's own counts."""
    record = call.record
    now = time.monotonic()
    total = now - call.started
    backend = record.upstream.backend_seconds if record.upstream else 0.0
    details = last.details
    prompt, completion, seed = origin.input_tokens, delivery.tokens, origin.seed
    if details is not None:
        if details.input_length is not None:
            prompt = details.input_length
        completion = details.generated_tokens
        if details.seed is not None:
            seed = details.seed
    return End(
        finish_reason=details.finish_reason if details else "",
        prompt_tokens=prompt,
        completion_tokens=completion,
        queue_seconds=record.admission.queue_seconds if record.admission else 0.0,
        time_to_first_token_seconds=(delivery.first_token_at or now) - call.started,
        total_seconds=total,
        gateway_overhead_seconds=max(total - backend, 0.0),
        seed=seed,
    )


async def collect(events: AsyncGenerator[Event, None]) -> Answer:
    """A whole generation from its events: the unary `Generate` (its Start says what the
    backend reported at the end: the prompt's size, and the seed it used)."""
    start: Start | None = None
    end: End | None = None
    text: list[str] = []
    steps: list[StreamEvent] = []
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Start):
                start = event
            elif isinstance(event, Delta):
                text.append(event.text)
                steps.extend(event.steps)
            else:
                end = event
    if start is None or end is None:  # pragma: no cover - respond yields both or raises
        raise internal_error("a generation without its Start or End")
    start = dataclasses.replace(start, input_tokens=end.prompt_tokens, seed=end.seed)
    return Answer(start=start, text="".join(text), steps=tuple(steps), end=end)
