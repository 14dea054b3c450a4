"""The router: the first rule whose condition holds picks the target, else the route's own."""

from __future__ import annotations

from typing import Any

from streamgate.routing import Facts, FieldTest, Route, Router, Rule, Target
from support.routes import pool, replica


def facts(**overrides: Any) -> Facts:
    base: dict[str, Any] = {
        "model": "llama",
        "tenant": "acme",
        "priority": 5,
        "metadata": {"x-user-id": "beta-7", "x-team": "search"},
    }
    return Facts(**{**base, **overrides})


def test_the_first_matching_rule_wins_else_the_routes_target() -> None:
    a, b, c = (pool(n, replica(n)) for n in "abc")
    route = Route("llama", Target(((a, 1.0),)))
    router = Router(
        [
            Rule("beta", FieldTest("x-user-id", prefix="beta-"), Target(((b, 1.0),))),
            Rule("acme", FieldTest("tenant", equals="acme"), Target(((c, 1.0),))),
        ]
    )
    assert router.target(route, facts())[1] == "beta"
    assert router.target(route, facts(metadata={}))[1] == "acme"
    target, rule = router.target(route, facts(metadata={}, tenant="zed"))
    assert (target, rule) == (route.target, "")
