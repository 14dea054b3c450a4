"""The routing rules in order, over a route's own target: which target serves a request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamgate.routing.rules import Condition, Facts
from streamgate.routing.table import Route
from streamgate.routing.target import Target

__all__ = ["Router", "Rule"]


@dataclass(frozen=True)
class Rule:
    """When `condition` holds, requests go to `target`."""

    name: str
    condition: Condition
    target: Target


class Router:
    """First matching rule wins; no match: the route's own target."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = tuple(rules)

    def target(self, route: Route, facts: Facts) -> tuple[Target, str]:
        """The target and the name of the rule that chose it ("" for the route's own)."""
        for rule in self.rules:
            if rule.condition.holds(facts):
                return rule.target, rule.name
        return route.target, ""
