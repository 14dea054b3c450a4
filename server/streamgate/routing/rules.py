"""Routing rules: conditions over a request's facts (model, tenant, priority, metadata).

A condition names a `field` and one operator: `equals`, `in`, `prefix`, `regex` (a full
match) or `exists`; `all`/`any` combine conditions. Rules are tried in order: the first whose
condition holds decides the request's target (config.RuleConfig).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["AllOf", "AnyOf", "Condition", "Facts", "FieldTest"]


@dataclass(frozen=True)
class Facts:
    """What rules may look at."""

    model: str
    """The route name."""
    tenant: str
    priority: int
    metadata: Mapping[str, str]
    """Call metadata (lower-case keys; `authorization` is never here)."""

    def get(self, field: str) -> str | None:
        """The value of `field` (None: absent)."""
        if field == "model":
            return self.model
        if field == "tenant":
            return self.tenant
        if field == "priority":
            return str(self.priority)
        return self.metadata.get(field)


@dataclass(frozen=True)
class FieldTest:
    """One field, one operator."""

    field: str
    equals: str | None = None
    one_of: frozenset[str] | None = None
    prefix: str | None = None
    pattern: re.Pattern[str] | None = None
    exists: bool | None = None

    def holds(self, facts: Facts) -> bool:
        value = facts.get(self.field)
        if self.exists is not None:
            return (value is not None) == self.exists
        if value is None:
            return False
        if self.equals is not None:
            return value == self.equals
        if self.one_of is not None:
            return value in self.one_of
        if self.prefix is not None:
            return value.startswith(self.prefix)
        return self.pattern is not None and self.pattern.fullmatch(value) is not None


@dataclass(frozen=True)
class AllOf:
    """Every part holds (an empty `AllOf` always holds)."""

    parts: Sequence[Condition]

    def holds(self, facts: Facts) -> bool:
        return all(p.holds(facts) for p in self.parts)


@dataclass(frozen=True)
class AnyOf:
    """At least one part holds."""

    parts: Sequence[Condition]

    def holds(self, facts: Facts) -> bool:
        return any(p.holds(facts) for p in self.parts)


Condition = FieldTest | AllOf | AnyOf
