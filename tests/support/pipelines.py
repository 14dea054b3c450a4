"""A real generation pipeline in the test's own event loop, built by gateway/app.py's `build_core`
(the fleet with its health checks, the cache tiers, flights, shadow traffic, the admission
queue, metrics), over backends the test serves itself (`support.fake.serve_fake`). No gRPC:
the tests drive `Pipeline.generate` directly, as a transport does.

    async with serve_fake() as fake, start_pipeline(pipeline_config(fake.url)) as gw:
        outcome = await gw.run(request("hello", tokens=5))   # its events, or its error
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from streamgate.admission import AdmissionQueue
from streamgate.config import GatewayConfig
from streamgate.gateway.app import build_core
from streamgate.gateway.fleet.fleet import Fleet
from streamgate.gateway.pipeline.errors import Code, GatewayError
from streamgate.gateway.pipeline.events import Delta, End, Event, Start
from streamgate.gateway.pipeline.run import Pipeline
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s02_auth import authenticate, authorize
from streamgate.gateway.pipeline.s03_prepare import GenerationRequest, prepare
from streamgate.gateway.pipeline.s04_choose import choose
from streamgate.gateway.pipeline.s05_cache import ResponseCache
from streamgate.gateway.pipeline.s06_coalesce import Flight, Flights
from streamgate.gateway.pipeline.s11_finish import Finish
from streamgate.routing import Replica
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Tenancy
from streamgate_client.v1 import generation_pb2 as pb

__all__ = [
    "NOTHING_HELD",
    "InProcessGateway",
    "Outcome",
    "kinds",
    "pipeline_config",
    "read_until",
    "request",
    "start_pipeline",
]

POOL = "fake"
"""The pool (and route) of `pipeline_config`'s backends."""
NOTHING_HELD = {"slots": 0, "queued": 0, "streams": 0, "leases": 0}
"""`InProcessGateway.held()` once every call has ended."""


def request(
    prompt: str = "hello world", tokens: int = 5, **fields: Any
) -> pb.GenerateStreamRequest:
    """A GenerateStream request for `tokens` new tokens; greedy, hence cacheable (the fake
    TGI reads its mode from the prompt: `mode:<name> key=value ...`)."""
    stopping = pb.StoppingCriteria(max_new_tokens=tokens)
    return pb.GenerateStreamRequest(prompt=prompt, stopping=stopping, **fields)


def pipeline_config(*urls: str, **sections: Any) -> GatewayConfig:
    """Backends b0, b1, ... at `urls` in one least-load pool and one route, both `fake`; health
    and load are checked once at start (then rarely); `sections` add to or replace these."""
    backends = [
        {
            "name": f"b{i}",
            "url": url,
            "health_interval_seconds": 300,
            "load_interval_seconds": 300,
            "idle_timeout_seconds": 30,
        }
        for i, url in enumerate(urls)
    ]
    base: dict[str, Any] = {
        "backends": backends,
        "pools": [
            {"name": POOL, "backends": [b["name"] for b in backends], "picker": "least_load"}
        ],
        "routes": [{"name": POOL, "pool": POOL}],
        "limits": {"retry_backoff_seconds": 0.001, "retry_backoff_max_seconds": 0.01},
    }
    return GatewayConfig.model_validate({**base, **sections})


@dataclass
class Outcome:
    """What one call yielded, and the error that ended it (None: it ended normally)."""

    events: list[Event]
    error: GatewayError | None

    @property
    def start(self) -> Start:
        start = self.events[0]
        assert isinstance(start, Start), self.events
        return start

    @property
    def deltas(self) -> list[Delta]:
        return [e for e in self.events if isinstance(e, Delta)]

    @property
    def end(self) -> End:
        end = self.events[-1]
        assert isinstance(end, End), self.events
        return end

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


class _Serving:
    """The gateway's serving status goes nowhere (no gRPC health service here)."""

    async def publish(self, serving: bool) -> None:
        pass

    async def drain(self) -> None:
        pass


@dataclass
class InProcessGateway:
    """The pipeline and the parts a test looks at."""

    config: GatewayConfig
    pipeline: Pipeline
    fleet: Fleet
    cache: ResponseCache
    flights: Flights
    queue: AdmissionQueue
    metrics: GatewayMetrics
    tenancy: Tenancy
    finish: Finish

    def call(
        self,
        *metadata: tuple[str, str],
        method: str = "GenerateStream",
        time_remaining: float | None = None,
    ) -> Call:
        """A new call with `metadata` (and a deadline `time_remaining` from now), authenticated
        as a transport does before its handler (the key in `authorization`, if auth is on)."""
        call = Call.start(
            method,
            metadata,
            peer="test",
            time_remaining=time_remaining,
            streaming=method == "GenerateStream",
        )
        authorization = dict(metadata).get("authorization", "")
        call.caller = authenticate(authorization, self.tenancy)
        return call

    def replica(self, name: str) -> Replica:
        return self.fleet.topology.replicas[name]

    async def run(self, request: GenerationRequest, call: Call | None = None) -> Outcome:
        """One call from start to end, as a transport makes it: every event the pipeline
        yields, or its GatewayError; then the finish stage."""
        call = call or self.call()
        events: list[Event] = []
        error: GatewayError | None = None
        generation = self.pipeline.generate(request, call)
        try:
            async with contextlib.aclosing(generation):
                async for event in generation:
                    events.append(event)
        except GatewayError as err:
            error = err
        self.finished(call, request, error)
        return Outcome(events, error)

    def finished(
        self,
        call: Call,
        request: GenerationRequest,
        error: GatewayError | None = None,
        code: Code | None = None,
    ) -> None:
        """The finish stage of `call` (metrics, cache outcome, log line), as the transport
        records it: `code` when the caller left (CANCELLED), else the error's or OK."""
        if code is None:
            code = error.code if error is not None else Code.OK
        self.finish(call, code, error, request)

    def flight(self, request: GenerationRequest) -> Flight | None:
        """The generation of `request` under way, if any: its cache key found as `generate`
        finds it (authorize, prepare, choose, plan)."""
        call = self.call()
        routing = self.pipeline.routing
        caller = call.authenticated
        route = authorize(caller, request.model, routing.routes)
        prepared = prepare(
            request,
            route,
            routing.templates.for_route(route),
            self.config.limits,
            self.config.max_prompt_chars,
        )
        pool = choose(route, call, caller, routing.router).pool
        return self.flights.get(
            self.cache.plan(request.cache, prepared, caller, route.name, pool).key
        )

    def held(self) -> dict[str, int]:
        """What calls hold now, by kind: upstream slots, queued requests, streams reserved on
        quotas, replica leases. All 0 once every call has ended."""
        tenants = [*self.tenancy.tenants.values(), self.tenancy.anonymous.tenant]
        quotas = {id(t.quota): t.quota for t in tenants}
        return {
            "slots": self.queue.active,
            "queued": self.queue.queued,
            "streams": sum(q.open_streams for q in quotas.values()),
            "leases": sum(r.in_flight for r in self.fleet.topology.replicas.values()),
        }


@contextlib.asynccontextmanager
async def start_pipeline(config: GatewayConfig) -> AsyncIterator[InProcessGateway]:
    """The gateway's core as `start_gateway` builds it (fleet sessions opened, each backend
    checked once: healthy and its /info read), without its gRPC door; stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:
        metrics = GatewayMetrics()
        core = await build_core(config, config.backends, metrics, _Serving(), stack)
        unhealthy = [r.name for r in core.fleet.topology.replicas.values() if not r.healthy]
        assert not unhealthy, f"backends not healthy at start: {unhealthy}"
        yield InProcessGateway(
            config=config,
            pipeline=core.pipeline,
            fleet=core.fleet,
            cache=core.parts.cache,
            flights=core.parts.flights,
            queue=core.parts.queue,
            metrics=metrics,
            tenancy=core.tenancy,
            finish=core.finish,
        )


async def read_until(events: AsyncGenerator[Event, None], count: int) -> list[Event]:
    """The next `count` events of a call (its caller reads on later, or leaves)."""
    return [await anext(events) for _ in range(count)]


def kinds(events: Sequence[Event]) -> list[str]:
    """`Start`, `Delta`, `End` for each event: a stream's shape."""
    return [type(e).__name__ for e in events]
