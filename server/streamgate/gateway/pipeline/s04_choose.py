"""Stage 4, choose: the pool of replicas that serves the request, by the routing rules.

The first rule whose condition holds over the request's facts (route, tenant, priority,
metadata labels) replaces the route's own target; a target is a pool or a weighted split
(sticky per `x-user-id`, else per request), with an optional fallback and shadow pool. The
replica inside the pool is picked later, when the request is sent (stage 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s02_auth import priority
from streamgate.routing import Facts, Pool, Route, Router
from streamgate.tenancy import Caller

__all__ = ["Choice", "choose"]


@dataclass(frozen=True)
class Choice:
    """Where a request goes."""

    pool: Pool
    rule: str
    """The rule that chose the pool ("": the route's own target)."""
    shadow: Pool | None
    """A pool that gets a copy of the request once admitted (its answer is discarded)."""
    priority: int
    """Its place in the admission queue."""


def choose(route: Route, call: Call, caller: Caller, router: Router) -> Choice:
    """The pool (and shadow pool) of a request to `route`."""
    place = priority(caller, call.priority_hint)
    facts = Facts(route.name, caller.tenant.name, place, call.labels)
    target, rule = router.target(route, facts)
    pool = target.choose(call.labels.get("x-user-id") or call.request_id)
    return Choice(pool=pool, rule=rule, shadow=target.shadow, priority=place)
