"""The orchestrator: one generation call's stages, in order, as one readable method.

    async for event in pipeline.generate(request, call):   # Start, Delta..., End
        ...                                                 # or a GatewayError is raised

`generate` runs the stages of the request path (the modules sNN_*) and yields plain events;
it knows no transport. `GenerateStream` writes what it yields, `Generate` collects it
(s10_respond.collect), in every door. A call's answer comes from one of three sources: the
cache (a finished flight), an identical generation under way (a running flight), or a
generation it leads itself (generation.py: admit, upstream, relay), which identical calls
may join.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from streamgate.gateway.pipeline.events import Event
from streamgate.gateway.pipeline.generation import Generation, Parts
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s02_auth import authorize
from streamgate.gateway.pipeline.s03_prepare import GenerationRequest, RouteTemplates, prepare
from streamgate.gateway.pipeline.s04_choose import choose
from streamgate.gateway.pipeline.s05_cache import not_cached, outcome
from streamgate.gateway.pipeline.s06_coalesce import Flight, Follower
from streamgate.gateway.pipeline.s10_respond import Source, respond
from streamgate.routing import Router, RouteTable

__all__ = ["Pipeline", "Routing"]


@dataclass(frozen=True)
class Routing:
    """What decides where a request goes: routes, rules and the routes' chat templates (the
    fleet's topology; replaced as a whole on a reload)."""

    routes: RouteTable
    router: Router
    templates: RouteTemplates


class Pipeline:
    """A generation call's stages (see the module doc). `parts` come from the composition
    root; `use` swaps the routing for new calls on a reload.

    Args:
        routing: routes, rules and chat templates.
        parts: what generations use (limits, queue, cache, flights, shadow, metrics).
        max_prompt_chars: the longest prompt accepted, in characters.
    """

    def __init__(self, routing: Routing, parts: Parts, *, max_prompt_chars: int) -> None:
        self.routing = routing
        self._parts = parts
        self._max_prompt_chars = max_prompt_chars

    def use(self, routing: Routing) -> None:
        """Route new calls with `routing` (a reload); running calls keep what they chose."""
        self.routing = routing

    async def generate(self, request: GenerationRequest, call: Call) -> AsyncGenerator[Event, None]:
        """Every stage of a generation call in order; yields its Start, Deltas and End."""
        parts, record, caller, routing = self._parts, call.record, call.authenticated, self.routing
        route = record.route = authorize(caller, request.model or call.route_hint, routing.routes)
        template = routing.templates.for_route(route)
        prepared = prepare(request, route, template, parts.limits, self._max_prompt_chars)
        choice = record.choice = choose(route, call, caller, routing.router)
        plan = parts.cache.plan(request.cache, prepared, caller, route.name, choice.pool)
        found = await parts.cache.lookup(plan)
        hit = found.response if found is not None else None
        running = parts.flights.get(plan.key) if plan.write and hit is None else None
        record.cache, record.cache_tier = outcome(found, coalesced=running is not None)
        if plan.only_if_cached and hit is None:
            raise not_cached()
        source: Source
        if hit is not None:
            source = Follower(Flight.cached(hit))
        elif running is not None:
            source = Follower(running)
        else:
            source = Generation(parts, call, route, prepared, choice, plan).produce()
        async with contextlib.aclosing(respond(source, call, prepared)) as events:
            async for event in events:
                yield event
