"""`streamgate.v1.GenerationService`: the request pipeline, stage by stage.

context → authenticate → route (authorized) → prepare (validate, chat template) → choose the
pool → cache (a hit is replayed; an identical generation under way is joined) → admit (quotas,
upstream slot) → upstream (pick, send, first token; retry elsewhere before it) → relay (Start,
one Delta per backend event, End; published for joiners, stored) → settle quotas → status,
metrics, log.

Every call ends in exactly one place (`_run`), which maps what went wrong to a status with
details (errors.py), records metrics and writes the request's log line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from streamgate.admission import AdmissionQueue
from streamgate.backends import BackendError, StreamEvent
from streamgate.cache import CachedResponse, TieredCache
from streamgate.config import GatewayConfig
from streamgate.gateway import messages, replay
from streamgate.gateway.admit import admit, token_budget
from streamgate.gateway.auth import authenticate, authorize, priority
from streamgate.gateway.caching import CachePlan, plan_cache
from streamgate.gateway.calls import ActiveCall, CallRegistry
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason, from_backend_error, internal_error
from streamgate.gateway.flight import Flight, FlightMeta, Flights
from streamgate.gateway.prepare import PreparedRequest, prepare
from streamgate.gateway.relay import Relay, StreamStalled
from streamgate.gateway.shadow import ShadowSender
from streamgate.gateway.topology import Topology
from streamgate.gateway.upstream import PromptTokens, Upstream, open_upstream
from streamgate.gateway.validate import GenerationRequest, RequestLimits
from streamgate.routing import Facts, Pool, Replica, Route, RouteNotFound
from streamgate.telemetry.logging import compact, get_logger
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Caller, Tenancy
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

__all__ = ["GenerationService", "ServiceSettings"]

log = get_logger(__name__)

_T = TypeVar("_T")
StreamContext = grpc.aio.ServicerContext[pb.GenerateStreamRequest, pb.GenerateStreamResponse]
UnaryContext = grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse]


@dataclass(frozen=True)
class ServiceSettings:
    """The configuration the servicer reads per request."""

    max_prompt_chars: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_cache_ttl_seconds: int
    cache_enabled: bool
    cache_ttl_seconds: int
    max_attempts: int
    retry_backoff: tuple[float, float]
    stream_buffer_events: int
    stall_timeout: float
    log_prompts: bool

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ServiceSettings:
        """The settings of `config`."""
        limits = config.limits
        return cls(
            max_prompt_chars=config.max_prompt_chars,
            max_stop_sequences=limits.max_stop_sequences,
            max_top_n_tokens=limits.max_top_n_tokens,
            max_cache_ttl_seconds=limits.max_cache_ttl_seconds,
            cache_enabled=config.cache.enabled,
            cache_ttl_seconds=min(config.cache.default_ttl_seconds, limits.max_cache_ttl_seconds),
            max_attempts=limits.max_attempts,
            retry_backoff=(limits.retry_backoff_seconds, limits.retry_backoff_max_seconds),
            stream_buffer_events=limits.stream_buffer_events,
            stall_timeout=limits.stall_timeout_seconds,
            log_prompts=config.logging.log_prompts,
        )


class GenerationService(pb_grpc.GenerationServiceServicer):
    """The servicer. Shared state (topology, calls, metrics) comes from the composition root.

    Args:
        topology: routes, pools, rules and chat templates (replaced by `use` on a reload).
        settings: limits and timeouts.
        calls: the registry of running calls (draining, shutdown).
        tenancy: API keys and tenants.
        queue: the admission queue in front of the upstream streams.
        shadow: sends copies of requests to shadow pools.
        cache: the exact response cache.
        metrics: where to record.
        on_backend_failure: told of every failed backend request (health re-checks).
    """

    def __init__(
        self,
        topology: Topology,
        settings: ServiceSettings,
        calls: CallRegistry,
        tenancy: Tenancy,
        queue: AdmissionQueue,
        shadow: ShadowSender,
        cache: TieredCache,
        metrics: GatewayMetrics,
        on_backend_failure: Callable[[Replica], None] | None = None,
    ) -> None:
        self._cache = cache
        self.cache_counts: Counter[str] = Counter()
        """Cache outcomes so far (hit, miss, bypass, coalesced), for GetCacheStats."""
        self._flights = Flights()
        """Cacheable generations under way, by cache key (identical calls join them)."""
        self._topology = topology
        self._shadow = shadow
        self._settings = settings
        self._calls = calls
        self._tenancy = tenancy
        self._queue = queue
        self._metrics = metrics
        self._on_backend_failure = on_backend_failure

    def use(self, topology: Topology) -> None:
        """Route new calls with `topology` (a reload); running calls keep what they chose."""
        self._topology = topology

    @property
    def cache_enabled(self) -> bool:
        """The cache is on."""
        return self._settings.cache_enabled

    async def close(self) -> None:
        """Stop generations that went on for joiners after their first caller left."""
        await self._flights.close()

    # ---- RPCs --------------------------------------------------------------------------------

    async def GenerateStream(  # type: ignore[override]  # a coroutine writing, not a generator
        self, request: pb.GenerateStreamRequest, context: StreamContext
    ) -> None:
        """Start, then one Delta per backend step, then End (see module doc)."""
        ctx = RequestContext.from_grpc(context, "GenerateStream")

        async def body(call: ActiveCall) -> None:
            await self._pipeline(
                request,
                ctx,
                answer=lambda prepared, flight: replay.stream_from(flight, context, ctx, prepared),
                generate=lambda route, pool, prepared, plan, flight: self._stream(
                    request, context, ctx, call, route, pool, prepared, plan, flight
                ),
            )

        await self._run(ctx, context, request, body)

    async def Generate(
        self, request: pb.GenerateRequest, context: UnaryContext
    ) -> pb.GenerateResponse:
        """The same pipeline, aggregated into one response."""
        ctx = RequestContext.from_grpc(context, "Generate")

        async def body(call: ActiveCall) -> pb.GenerateResponse:
            return await self._pipeline(
                request,
                ctx,
                answer=lambda prepared, flight: replay.unary_from(flight, context, ctx, prepared),
                generate=lambda route, pool, prepared, plan, flight: self._unary(
                    context, ctx, call, pool, prepared, plan, flight
                ),
            )

        return await self._run(ctx, context, request, body)

    async def ListModels(
        self,
        request: pb.ListModelsRequest,
        context: grpc.aio.ServicerContext[pb.ListModelsRequest, pb.ListModelsResponse],
    ) -> pb.ListModelsResponse:
        """The routes the caller may use, their backends' model ids and limits."""
        ctx = RequestContext.from_grpc(context, "ListModels")

        async def answer(call: ActiveCall) -> pb.ListModelsResponse:
            caller = self._caller(ctx)
            models = [
                pb.Model(
                    name=route.name,
                    default=route.name == self._topology.routes.default,
                    backend_models=route.model_ids(),
                    max_input_tokens=route.max_input_tokens or 0,
                    max_total_tokens=route.max_total_tokens or 0,
                )
                for route in self._topology.routes
                if caller.tenant.may_use(route.name)
            ]
            return pb.ListModelsResponse(models=models)

        return await self._run(ctx, context, None, answer)

    async def _pipeline(
        self,
        request: GenerationRequest,
        ctx: RequestContext,
        *,
        answer: Callable[[PreparedRequest, Flight], Awaitable[_T]],
        generate: Callable[[Route, Pool, PreparedRequest, CachePlan, Flight | None], Awaitable[_T]],
    ) -> _T:
        """The stages every generation call goes through, up to its answer: from the cache or
        an identical generation under way (`answer` from a flight: finished, or running), or
        from a backend (`generate`, once admitted; it publishes to its flight, if any)."""
        caller = self._caller(ctx)
        route = self._route(request, ctx, caller)
        prepared = self._prepare(request, route)
        pool, shadow = self._choose(route, ctx, caller)
        plan, hit = await self._lookup(request, prepared, caller, route, pool, ctx)
        if hit is not None:
            return await answer(prepared, replay.cached(hit))
        running = self._flights.get(plan.key) if plan.write else None
        if running is not None:
            ctx.stats.cache = "COALESCED"
            self._metrics.cache_requests.labels("coalesced", "local").inc()
            self.cache_counts["coalesced"] += 1
            running.join()
            try:
                return await answer(prepared, running)
            finally:
                running.leave()

        def admitted(flight: Flight | None) -> Awaitable[_T]:
            def run() -> Awaitable[_T]:
                return generate(route, pool, prepared, plan, flight)

            return self._admitted(caller, route, prepared, ctx, run, shadow)

        if not plan.write:
            return await admitted(None)
        return await self._flights.lead(plan.key, admitted)

    # ---- the end of every call ---------------------------------------------------------------

    async def _run(
        self,
        ctx: RequestContext,
        context: grpc.aio.ServicerContext[Any, Any],
        request: GenerationRequest | None,
        body: Callable[[ActiveCall], Awaitable[_T]],
    ) -> _T:
        """Run `body`; map its failure to a status; record metrics and the log line."""
        generation = request is not None
        if generation:
            self._metrics.active_streams.inc()
        error: GatewayError | None = None
        try:
            with self._calls.track(ctx) as call:
                try:
                    result = await body(call)
                except asyncio.CancelledError:
                    if call.error is None:
                        raise  # the client cancelled or its deadline passed: gRPC ended the call
                    # The gateway interrupted the call (shutdown, stalled client): answer it.
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    error = call.error
                finally:
                    call.finishing = True
        except GatewayError as err:
            error = err
        except asyncio.CancelledError:
            self._finish(
                ctx, request, "DEADLINE_EXCEEDED" if ctx.deadline_passed() else "CANCELLED"
            )
            raise
        except Exception:
            log.exception(
                "unexpected failure",
                request_id=ctx.request_id,
                method=ctx.method,
                tenant=ctx.stats.tenant,
            )
            error = internal_error()
        finally:
            if generation:
                self._metrics.active_streams.dec()
        if error is None:
            self._finish(ctx, request, "OK")
            if ctx.trailing:
                context.set_trailing_metadata(tuple(ctx.trailing))
            return result
        self._finish(ctx, request, error.code.name, error)
        status = error.to_status(
            request_id=ctx.request_id,
            route=ctx.stats.route or None,
            backend=ctx.stats.backend or None,
            tokens_sent=ctx.stats.output_tokens if ctx.stats.backend else None,
            trailing=ctx.trailing,
        )
        try:
            # Bounded: a client that reads nothing holds the status behind its unread
            # messages. The status stays queued in gRPC; the handler need not wait for it.
            await asyncio.wait_for(context.abort_with_status(status), self._settings.stall_timeout)
        except TimeoutError:
            raise asyncio.CancelledError from None
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    def _finish(
        self,
        ctx: RequestContext,
        request: GenerationRequest | None,
        code: str,
        error: GatewayError | None = None,
    ) -> None:
        """Metrics and the request's log line."""
        s = ctx.stats
        total = ctx.elapsed()
        m = self._metrics
        m.requests.labels(ctx.method, code).inc()
        m.duration.labels(ctx.method, s.route).observe(total)
        if s.tenant:
            m.tenant_requests.labels(s.tenant, code).inc()
        if error is not None and error.reason in _REJECTIONS:
            m.rejections.labels(s.tenant, error.reason.value).inc()  # tenant "": unknown
        if s.backend:
            m.overhead.labels(ctx.method).observe(max(total - s.backend_wait, 0.0))
            m.tokens.labels("in", s.route).inc(s.input_tokens)
            m.tokens.labels("out", s.route).inc(s.output_tokens)
            m.tenant_tokens.labels(s.tenant, "in").inc(s.input_tokens)
            m.tenant_tokens.labels(s.tenant, "out").inc(s.output_tokens)
        if request is None:
            return  # ListModels: not worth a line each
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": ctx.method,
            "tenant": s.tenant,
            "key": s.key,
            "code": code,
            "reason": error.reason.value if error is not None else None,
            "error": error.message if error is not None else None,
            "route": s.route,
            "rule": s.rule,
            "pool": s.pool,
            "backend": s.backend,
            "model": s.model,
            "attempts": s.attempts,
            "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens,
            "finish_reason": s.finish_reason,
            "queue_s": round(s.queue_seconds, 6) if s.queue_seconds else None,
            "ttft_s": round(s.first_token_at - ctx.started, 6) if s.first_token_at else None,
            "total_s": round(total, 6),
            "overhead_s": round(max(total - s.backend_wait, 0.0), 6) if s.backend else None,
            "merged_events": s.merged_events,
            "cache": s.cache,
            "cache_tier": s.cache_tier,
            "peer": ctx.peer,
            "labels": ctx.labels,
        }
        if self._settings.log_prompts:
            fields["prompt"] = (
                request.prompt
                if request.WhichOneof("input") == "prompt"
                else [{"role": m.role, "content": m.content} for m in request.chat.messages]
            )
        log.info("request", **compact(fields))

    # ---- shared stages -----------------------------------------------------------------------

    def _caller(self, ctx: RequestContext) -> Caller:
        caller = authenticate(ctx, self._tenancy)
        ctx.caller = caller
        ctx.stats.tenant = caller.tenant.name
        ctx.stats.key = caller.key.label if caller.key is not None else ""
        return caller

    def _route(self, request: GenerationRequest, ctx: RequestContext, caller: Caller) -> Route:
        name = request.model or ctx.route_hint
        routes = self._topology.routes
        authorize(caller, name or routes.default)  # before the route's existence shows
        try:
            route = routes.resolve(name)
        except RouteNotFound as err:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.ROUTE_NOT_FOUND,
                str(err),
                metadata={"model": err.name, "models": ",".join(err.known)},
            ) from None
        ctx.stats.route = route.name
        return route

    def _prepare(self, request: GenerationRequest, route: Route) -> PreparedRequest:
        s = self._settings
        total = route.max_total_tokens
        limits = RequestLimits(
            max_prompt_chars=s.max_prompt_chars,
            max_new_tokens=None if total is None else total - 1,
            max_input_tokens=route.max_input_tokens,
            max_stop_sequences=route.max_stop_sequences(s.max_stop_sequences),
            max_top_n_tokens=s.max_top_n_tokens,
            max_cache_ttl_seconds=s.max_cache_ttl_seconds,
        )
        return prepare(
            request,
            self._topology.templates[route.name],
            limits,
            default_max_new_tokens=route.default_max_new_tokens,
        )

    async def _admitted(
        self,
        caller: Caller,
        route: Route,
        prepared: PreparedRequest,
        ctx: RequestContext,
        run: Callable[[], Awaitable[_T]],
        shadow: Pool | None,
    ) -> _T:
        """Run `run` once admitted (quotas, then an upstream slot); settle the quotas after it
        with the tokens really used, however it ended. An admitted request's copy goes to the
        `shadow` pool, if any."""
        budget = token_budget(prepared, route)
        try:
            admission = await admit(caller, ctx, budget.total, self._queue, ctx.priority)
        except GatewayError:
            ctx.trailing.extend(_quota_metadata(caller))  # a refused caller learns its quota too
            raise
        if shadow is not None:
            self._shadow.send(shadow, prepared.inputs, prepared.parameters, ctx.request_id)
        s = ctx.stats
        s.queue_seconds = admission.queue_seconds
        self._metrics.queue_wait.observe(admission.queue_seconds)

        def settle() -> None:
            # The prompt counts once the backend worked on it; its size, if not reported, is
            # bounded by the reservation's estimate.
            prompt = (s.input_tokens or budget.prompt) if s.received_tokens else 0
            admission.finish(prompt + s.received_tokens)
            self._metrics.record_quota(caller.tenant.name, caller.tenant.quota.remaining())

        try:
            return await run()
        finally:
            if ctx.handoff is not None and not ctx.handoff.done():
                # The generation goes on for coalesced callers: it keeps the slot till its end.
                ctx.handoff.add_done_callback(lambda _: settle())
            else:
                settle()
            ctx.trailing.extend(_quota_metadata(caller))

    def _choose(
        self, route: Route, ctx: RequestContext, caller: Caller
    ) -> tuple[Pool, Pool | None]:
        """The pool that serves the request (rules, split, fallback) and the shadow pool."""
        ctx.priority = priority(caller, ctx)
        facts = Facts(route.name, caller.tenant.name, ctx.priority, ctx.labels)
        target, rule = self._topology.router.target(route, facts)
        pool = target.choose(ctx.labels.get("x-user-id") or ctx.request_id)
        ctx.stats.pool = pool.name
        ctx.stats.rule = rule
        self._metrics.rule_matches.labels(route.name, rule, pool.name).inc()
        return pool, target.shadow

    async def _open(
        self,
        pool: Pool,
        prepared: PreparedRequest,
        ctx: RequestContext,
        *,
        count_tokens: bool,
        on_final: Callable[[Replica, PromptTokens], None] | None = None,
    ) -> Upstream:
        namespace = ctx.caller.tenant.cache_namespace if ctx.caller else ""
        upstream = await open_upstream(
            pool,
            prepared,
            ctx,
            max_attempts=self._settings.max_attempts,
            count_tokens=count_tokens,
            on_failure=self._backend_failed,
            on_final=on_final,
            pick=pool.request(prepared.inputs, salt=f"{pool.name}\0{namespace}"),
            backoff=self._settings.retry_backoff,
        )
        if upstream.attempts > 1:
            self._metrics.retries.labels(ctx.stats.route).inc()
        s = ctx.stats
        s.attempts = upstream.attempts
        s.backend = upstream.replica.name
        s.model = upstream.replica.model_id
        s.backend_wait = upstream.backend_time(upstream.first_at)
        return upstream

    def _backend_failed(self, replica: Replica, err: BackendError) -> None:
        self._metrics.backend_errors.labels(replica.name, err.kind).inc()
        if err.kind in _REPLICA_FAULTS and replica.circuit.record_failure():
            self._metrics.ejections.labels(replica.name).inc()
            log.warning("backend ejected: its circuit opened", backend=replica.name)
        if err.kind in ("unavailable", "timeout") and self._on_backend_failure is not None:
            self._on_backend_failure(replica)

    # ---- the cache ---------------------------------------------------------------------------

    async def _lookup(
        self,
        request: GenerationRequest,
        prepared: PreparedRequest,
        caller: Caller,
        route: Route,
        pool: Pool,
        ctx: RequestContext,
    ) -> tuple[CachePlan, CachedResponse | None]:
        """The request's cache plan and its cached answer, if any; NOT_FOUND for
        `only_if_cached` without one."""
        plan = plan_cache(
            request.cache,
            prepared,
            caller,
            route.name,
            pool,
            enabled=self._settings.cache_enabled,
            default_ttl=self._settings.cache_ttl_seconds,
        )
        found = await self._cache.get(plan.key) if plan.read else None
        hit = found.response if found is not None else None
        s = ctx.stats
        s.cache = "HIT" if hit is not None else "MISS" if plan.read else "BYPASS"
        tier = found.tier if found is not None else "local"
        if hit is not None:
            s.cache_tier = tier
        self._metrics.cache_requests.labels(s.cache.lower(), tier).inc()
        self.cache_counts[s.cache.lower()] += 1
        if hit is not None and tier == "redis":
            self.cache_counts["redis_hit"] += 1
        if plan.only_if_cached and hit is None:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.NOT_CACHED,
                "no cached answer for this request (CACHE_MODE_ONLY_IF_CACHED)",
            )
        return plan, hit

    def _store(
        self,
        plan: CachePlan,
        events: Sequence[StreamEvent],
        replica: Replica,
        pool: str,
        input_tokens: int,
        requested_seed: int | None,
    ) -> None:
        """Keep a finished generation for replay (when the plan allows it)."""
        if not plan.write:
            self._metrics.cache_requests.labels("store_skipped", "local").inc()
            return
        entry = CachedResponse(
            events=tuple(events),
            scope=plan.scope,
            model=replica.model_id,
            backend=replica.name,
            pool=pool,
            input_tokens=input_tokens,
            seed=_seed(events[-1], requested_seed),
        )
        self._cache.put(plan.key, entry, plan.ttl)

    def _carry_on(
        self,
        flight: Flight,
        plan: CachePlan,
        relay: Relay,
        upstream: Upstream,
        ctx: RequestContext,
        requested_seed: int | None,
    ) -> asyncio.Task[None]:
        """Keep reading a generation whose first caller left, for its joiners (and the cache);
        it stops when the last of them leaves. The task is the call's `handoff`."""

        async def read() -> None:
            try:
                async for batch in relay:
                    flight.publish(batch)
                meta = flight.meta
                self._store(
                    plan,
                    flight.events,
                    upstream.replica,
                    meta.pool if meta else "",
                    replay.input_tokens(flight.events[-1], meta.input_tokens if meta else 0),
                    requested_seed,
                )
                flight.finish()
            except BackendError as err:
                self._backend_failed(upstream.replica, err)
                flight.fail(
                    from_backend_error(err, tokens_sent=0, deadline_passed=False, chat=False)
                )
            finally:
                await relay.close()

        def ended() -> None:
            upstream.close()
            ctx.stats.received_tokens = upstream.stream.tokens_received  # for the settlement

        return self._flights.carry_on(plan.key, flight, read, ended)

    # ---- GenerateStream ----------------------------------------------------------------------

    async def _stream(
        self,
        request: pb.GenerateStreamRequest,
        context: StreamContext,
        ctx: RequestContext,
        call: ActiveCall,
        route: Route,
        pool: Pool,
        prepared: PreparedRequest,
        plan: CachePlan,
        flight: Flight | None,
    ) -> None:
        preamble: asyncio.Task[None] | None = None

        def announce(replica: Replica, tokens: PromptTokens) -> None:
            # The backend is certain: headers and Start go out while it prefills.
            nonlocal preamble
            preamble = asyncio.create_task(self._preamble(context, ctx, prepared, replica, tokens))

        opened = False
        try:
            upstream = await self._open(pool, prepared, ctx, count_tokens=True, on_final=announce)
            opened = True
        finally:
            if preamble is not None and not opened:
                await _settle(preamble)  # its messages go out before the status
        stats = ctx.stats
        relay: Relay | None = None
        carried_on = False
        try:
            if preamble is not None:
                await preamble
            else:
                await self._preamble(
                    context, ctx, prepared, upstream.replica, upstream.prompt_tokens
                )
            replica = upstream.replica
            if flight is not None:
                flight.start(
                    FlightMeta(
                        replica.model_id,
                        replica.name,
                        stats.pool,
                        stats.input_tokens,
                        prepared.seed,
                    )
                )

            itl = self._metrics.inter_token.labels(route.name)
            last_arrival = upstream.first_at

            def arrived(at: float) -> None:
                nonlocal last_arrival
                itl.observe(at - last_arrival)
                last_arrival = at

            relay = self._relay_of(upstream, call, on_event=arrived)
            recorded: list[StreamEvent] = flight.events if flight is not None else []
            last = await self._relay(
                relay, context, ctx, prepared, flight.publish if flight else recorded.extend
            )
            stats.backend_wait = upstream.backend_time(relay.last_arrival)
            stats.finish_reason = last.details.finish_reason if last.details else ""
            if last.details is not None and last.details.input_length is not None:
                stats.input_tokens = last.details.input_length
            now = time.monotonic()
            end = messages.end(
                last.details,
                prompt_tokens=stats.input_tokens,
                completion_tokens=stats.output_tokens,
                queue=stats.queue_seconds,
                time_to_first_token=(stats.first_token_at or now) - ctx.started,
                total=now - ctx.started,
                backend_time=stats.backend_wait,
            )
            await context.write(pb.GenerateStreamResponse(end=end))
            self._store(
                plan, recorded, upstream.replica, stats.pool, stats.input_tokens, prepared.seed
            )
            if flight is not None:
                flight.finish()
        except asyncio.CancelledError:
            if flight is not None and relay is not None and flight.followers and not flight.done:
                # The caller left, others wait for the same answer: the generation goes on.
                carried_on = True
                ctx.handoff = self._carry_on(flight, plan, relay, upstream, ctx, prepared.seed)
            raise
        except BackendError as err:
            self._backend_failed(upstream.replica, err)
            raise from_backend_error(
                err,
                tokens_sent=stats.output_tokens,
                deadline_passed=ctx.deadline_passed(),
                chat=prepared.chat,
            ) from None
        except StreamStalled as err:
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.CLIENT_TOO_SLOW, str(err)
            ) from None
        finally:
            if relay is not None:
                stats.backend_wait = upstream.backend_time(relay.last_arrival)
                if not carried_on:
                    await relay.close()
            stats.received_tokens = upstream.stream.tokens_received
            if not carried_on:
                upstream.close()

    async def _preamble(
        self,
        context: StreamContext,
        ctx: RequestContext,
        prepared: PreparedRequest,
        replica: Replica,
        tokens: PromptTokens,
    ) -> None:
        """Initial metadata and Start, once `replica` is certain to serve the call."""
        await context.send_initial_metadata(messages.initial_metadata(ctx, replica.name))
        ctx.stats.input_tokens = await tokens.get() or 0
        start = messages.start(
            ctx, replica.model_id, replica.name, prepared.seed, ctx.stats.input_tokens
        )
        await context.write(pb.GenerateStreamResponse(start=start))

    async def _relay(
        self,
        relay: Relay,
        context: StreamContext,
        ctx: RequestContext,
        prepared: PreparedRequest,
        record: Callable[[list[StreamEvent]], None],
    ) -> StreamEvent:
        """Write every batch of events as one Delta, and `record` it; returns the last event."""
        stats = ctx.stats
        last: StreamEvent | None = None
        async for batch in relay:
            await context.write(
                pb.GenerateStreamResponse(delta=messages.delta(batch, prepared.tokens))
            )
            stats.output_tokens += len(batch)
            record(batch)
            if len(batch) > 1:
                stats.merged_events += len(batch)
                self._metrics.merged_events.inc(len(batch))
            if stats.first_token_at is None:
                stats.first_token_at = time.monotonic()
                self._metrics.time_to_first_token.labels(stats.route).observe(
                    stats.first_token_at - ctx.started
                )
            last = batch[-1]
        if last is None or not last.final:  # pragma: no cover - the adapter raises instead
            raise internal_error("the backend stream ended without its last event")
        return last

    # ---- Generate ----------------------------------------------------------------------------

    async def _unary(
        self,
        context: UnaryContext,
        ctx: RequestContext,
        call: ActiveCall,
        pool: Pool,
        prepared: PreparedRequest,
        plan: CachePlan,
        flight: Flight | None,
    ) -> pb.GenerateResponse:
        upstream = await self._open(pool, prepared, ctx, count_tokens=False)
        stats = ctx.stats
        replica = upstream.replica
        if flight is not None:
            flight.start(FlightMeta(replica.model_id, replica.name, stats.pool, 0, prepared.seed))
        # Read through a relay even here: if this caller leaves, the reader can go on for
        # coalesced callers.
        relay = self._relay_of(upstream, call)
        events: list[StreamEvent] = flight.events if flight is not None else []
        record = flight.publish if flight is not None else events.extend
        carried_on = False
        try:
            async for batch in relay:
                record(batch)
        except asyncio.CancelledError:
            if flight is not None and flight.followers and not flight.done:
                carried_on = True
                ctx.handoff = self._carry_on(flight, plan, relay, upstream, ctx, prepared.seed)
            raise
        except BackendError as err:
            self._backend_failed(replica, err)
            raise from_backend_error(
                err, tokens_sent=0, deadline_passed=ctx.deadline_passed(), chat=prepared.chat
            ) from None
        finally:
            stats.received_tokens = upstream.stream.tokens_received
            if not carried_on:
                await relay.close()
                upstream.close()
        now = time.monotonic()  # the last event has just arrived
        stats.backend_wait = upstream.backend_time(now)
        response = messages.unary_response(
            ctx, events, model=replica.model_id, backend=replica.name,
            with_tokens=prepared.tokens, requested_seed=prepared.seed,
            first_at=upstream.first_at, now=now, backend_time=stats.backend_wait,
        )  # fmt: skip
        self._store(plan, events, replica, stats.pool, stats.input_tokens, prepared.seed)
        if flight is not None:
            flight.finish()
        await context.send_initial_metadata(messages.initial_metadata(ctx, replica.name))
        return response

    def _relay_of(
        self, upstream: Upstream, call: ActiveCall, on_event: Callable[[float], None] | None = None
    ) -> Relay:
        """The upstream's events through a bounded buffer; a stall ends the call."""

        def stalled(err: StreamStalled) -> None:
            call.interrupt(
                GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.CLIENT_TOO_SLOW, str(err))
            )

        return Relay(
            upstream.stream,
            upstream.first,
            upstream.first_at,
            capacity=self._settings.stream_buffer_events,
            stall_timeout=self._settings.stall_timeout,
            on_stall=stalled,
            on_event=on_event,
        )


# Failures that say something about the replica (not about the request, nor a full backend).
_REPLICA_FAULTS = frozenset({"unavailable", "timeout", "protocol"})


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


def _quota_metadata(caller: Caller) -> list[tuple[str, str]]:
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


async def _settle(task: asyncio.Task[None]) -> None:
    """Wait for `task` to end, whatever its outcome (the call fails for another reason)."""
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: asyncio would log it as never retrieved otherwise


def _seed(last: StreamEvent, requested: int | None) -> int | None:
    """The seed of a finished generation: the request's, or the one the backend reports."""
    if requested is not None or last.details is None:
        return requested
    return last.details.seed
