"""Routes by name (the default for an empty name), and a route's limits from its replicas."""

from __future__ import annotations

import pytest

from streamgate.routing import RouteNotFound, RouteTable
from support.routes import backend_info, replica, route


def test_an_empty_name_is_the_default_route_and_an_unknown_one_lists_the_routes() -> None:
    table = RouteTable([route("a", replica("x")), route("b", replica("y"))], default="b")
    assert table.resolve("").name == "b" and table.resolve("a").name == "a"
    with pytest.raises(RouteNotFound, match=r"unknown model 'c' \(models: a, b\)"):
        table.resolve("c")
    assert len(table) == 2 and [r.name for r in table] == ["a", "b"]
    with pytest.raises(ValueError, match="default route 'z'"):
        RouteTable([route("a")], default="z")


def test_the_routes_replicas_once_each_in_route_order() -> None:
    x, y = replica("x"), replica("y")
    table = RouteTable([route("a", x, y), route("b", y)], default="a")
    assert table.replicas() == [x, y]


def test_a_routes_limits_are_the_smallest_its_replicas_reported() -> None:
    small = replica("s", info=backend_info(max_input_tokens=100, max_total_tokens=200,
                                           max_stop_sequences=2))  # fmt: skip
    big = replica("b", info=backend_info(max_input_tokens=1000, max_total_tokens=2000))
    silent = replica("n")
    r = route("r", small, big, silent)
    assert (r.max_input_tokens, r.max_total_tokens) == (100, 200)
    assert r.max_stop_sequences(default=4) == 2
    unknown = route("u", silent)
    assert (unknown.max_input_tokens, unknown.max_total_tokens) == (None, None)
    assert unknown.max_stop_sequences(default=4) == 4


def test_a_route_is_healthy_while_one_replica_is_and_lists_model_ids_once() -> None:
    a = replica("a", info=backend_info(model_id="m"))
    b = replica("b", healthy=False, info=backend_info(model_id="m"))
    r = route("r", a, b)
    assert r.healthy and r.model_ids() == ["m"]
    a.healthy = False
    assert not r.healthy
