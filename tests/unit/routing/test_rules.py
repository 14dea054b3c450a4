"""Rule conditions over a request's facts: equals, one of, prefix, full-match regex, exists,
all and any."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamgate.routing import AllOf, AnyOf, Condition, Facts, FieldTest


def facts(**overrides: Any) -> Facts:
    base: dict[str, Any] = {
        "model": "llama",
        "tenant": "acme",
        "priority": 5,
        "metadata": {"x-user-id": "beta-7", "x-team": "search"},
    }
    return Facts(**{**base, **overrides})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (FieldTest("model", equals="llama"), True),
        (FieldTest("tenant", one_of=frozenset({"x", "acme"})), True),
        (FieldTest("x-user-id", prefix="beta-"), True),
        (FieldTest("x-user-id", prefix="prod-"), False),
        (FieldTest("x-team", pattern=re.compile("sea.*")), True),
        (FieldTest("x-team", pattern=re.compile("sea")), False),  # a full match
        (FieldTest("x-missing", exists=False), True),
        (FieldTest("x-missing", equals=""), False),
        (FieldTest("priority", one_of=frozenset({"5", "6"})), True),
        (AllOf((FieldTest("model", equals="llama"), FieldTest("tenant", equals="other"))), False),
        (AnyOf((FieldTest("model", equals="llama"), FieldTest("tenant", equals="other"))), True),
        (AllOf(()), True),
    ],
)
def test_rule_conditions(condition: Condition, expected: bool) -> None:
    assert condition.holds(facts()) is expected
