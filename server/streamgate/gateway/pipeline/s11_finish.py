"""Stage 11, finish: the end of every call, whatever its door and however it ended: its metrics
and (for generation calls) its one log line, both derived from the call's record.

A transport calls it once per call, after the handler returned or failed, with the call's
status code and its error, if any.
"""

from __future__ import annotations

from typing import Any

from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.events import cache_name
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s03_prepare import GenerationRequest
from streamgate.gateway.pipeline.s05_cache import ResponseCache
from streamgate.telemetry.logging import compact, get_logger
from streamgate.telemetry.metrics import GatewayMetrics

__all__ = ["Finish"]

log = get_logger(__name__)

# Refusals counted per tenant and reason (streamgate_rejections).
_REJECTIONS = frozenset(
    {
        Reason.API_KEY_MISSING,
        Reason.API_KEY_INVALID,
        Reason.ROUTE_NOT_ALLOWED,
        Reason.RATE_LIMITED,
        Reason.TOO_MANY_STREAMS,
        Reason.REQUEST_OVER_QUOTA,
        Reason.QUEUE_FULL,
        Reason.QUEUE_TIMEOUT,
    }
)


class Finish:
    """Records the end of calls (one instance, from the composition root).

    Args:
        metrics: where to record.
        cache: counts each generation call's cache outcome.
        log_prompts: include the prompt in request lines (it may be personal data).
    """

    def __init__(self, metrics: GatewayMetrics, cache: ResponseCache, *, log_prompts: bool):
        self._metrics = metrics
        self._cache = cache
        self._log_prompts = log_prompts

    def __call__(
        self,
        call: Call,
        code: Code,
        error: GatewayError | None = None,
        request: GenerationRequest | None = None,
    ) -> None:
        """Record `call`, which ended with `code` (and `error`); `request` for generation
        calls (they get a log line)."""
        m = self._metrics
        r = call.record
        total = call.elapsed()
        tenant = call.caller.tenant.name if call.caller else ""
        route = r.route.name if r.route else ""
        backend = r.upstream.backend_seconds if r.upstream else 0.0
        prompt = r.end.prompt_tokens if r.end else r.origin.input_tokens if r.origin else 0
        # What the client got: a stream's deliveries; a unary answer's tokens if it was sent.
        tokens = call.tokens_sent() or (r.delivery.tokens if r.delivery and r.end else 0)
        m.requests.labels(call.method, code.name).inc()
        m.duration.labels(call.method, route).observe(total)
        if tenant:
            m.tenant_requests.labels(tenant, code.name).inc()
        if error is not None and error.reason in _REJECTIONS:
            m.rejections.labels(tenant, error.reason.value).inc()  # tenant "": unknown
        if r.choice is not None:
            m.rule_matches.labels(route, r.choice.rule, r.choice.pool.name).inc()
        if request is not None:
            self._cache.count(r.cache, r.cache_tier)
        if r.admission is not None:
            m.queue_wait.observe(r.admission.queue_seconds)
        if r.upstream is not None and r.upstream.attempts > 1:
            m.retries.labels(route).inc()
        if r.origin is not None:
            m.overhead.labels(call.method).observe(max(total - backend, 0.0))
            m.tokens.labels("in", route).inc(prompt)
            m.tokens.labels("out", route).inc(tokens)
            m.tenant_tokens.labels(tenant, "in").inc(prompt)
            m.tenant_tokens.labels(tenant, "out").inc(tokens)
        first_token_at = r.delivery.first_token_at if r.delivery else None
        queued = r.admission.queue_seconds if r.admission else 0.0
        if r.delivery is not None:
            if first_token_at is not None and call.method == "GenerateStream":
                m.time_to_first_token.labels(route).observe(first_token_at - call.started)
            if r.delivery.merged_events:
                m.merged_events.inc(r.delivery.merged_events)
        if request is None:
            return  # not a generation call: not worth a line each
        fields: dict[str, Any] = {
            "request_id": call.request_id,
            "method": call.method,
            "tenant": tenant,
            "key": call.caller.key.label if call.caller and call.caller.key else "",
            "code": code.name,
            "reason": error.reason.value if error is not None else None,
            "error": error.message if error is not None else None,
            "route": route,
            "rule": r.choice.rule if r.choice else "",
            "pool": r.origin.pool if r.origin else r.choice.pool.name if r.choice else "",
            "backend": r.origin.backend if r.origin else "",
            "model": r.origin.model if r.origin else "",
            "attempts": r.upstream.attempts if r.upstream else 0,
            "input_tokens": prompt,
            "output_tokens": tokens,
            "finish_reason": r.end.finish_reason if r.end else "",
            "queue_s": round(queued, 6) if queued else None,
            "ttft_s": round(first_token_at - call.started, 6) if first_token_at else None,
            "total_s": round(total, 6),
            "overhead_s": round(max(total - backend, 0.0), 6) if r.origin else None,
            "merged_events": r.delivery.merged_events if r.delivery else 0,
            "cache": cache_name(r.cache),
            "cache_tier": r.cache_tier if cache_name(r.cache) == "HIT" else "",
            "peer": call.peer,
            "labels": call.labels,
        }
        if self._log_prompts:
            fields["prompt"] = (
                request.prompt
                if request.WhichOneof("input") == "prompt"
                else [{"role": c.role, "content": c.content} for c in request.chat.messages]
            )
        log.info("request", **compact(fields))
