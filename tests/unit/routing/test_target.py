"""Targets: a pool or a split, the fallback pool when the chosen one has no replica left, and
every replica that may serve."""

from __future__ import annotations

from streamgate.routing import Target
from support.routes import pool, replica


def test_the_fallback_pool_serves_when_the_primary_has_no_replica() -> None:
    primary = pool("big", replica("b1", healthy=False))
    small = pool("small", replica("s1"))
    target = Target(((primary, 1.0),), fallback=small)
    assert target.choose("k") is small
    primary.replicas[0].healthy = True
    assert target.choose("k") is primary


def test_the_replicas_of_arms_and_fallback_once_each_but_not_the_shadows() -> None:
    shared, a, s, shadow = replica("shared"), replica("a"), replica("s"), replica("shadow")
    target = Target(
        ((pool("x", shared, a), 50.0), (pool("y", shared), 50.0)),
        fallback=pool("small", s),
        shadow=pool("shadow", shadow),
    )
    assert target.replicas() == (shared, a, s)
