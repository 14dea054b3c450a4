"""The topology built from a configuration: replicas, pools with their pickers, routes and
their targets, rules, chat templates; a reload keeps what did not change."""

from __future__ import annotations

from typing import Any

import pytest

from streamgate.config import ConfigError, GatewayConfig
from streamgate.gateway.fleet.topology import build_topology
from streamgate.routing import Facts, LeastLoad, PrefixAffinity, RoundRobin

BACKENDS: list[dict[str, Any]] = [{"name": n, "url": f"http://{n}:80"} for n in ("a", "b", "c")]


def config(**sections: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"backends": BACKENDS, **sections})


def test_pools_and_routes_from_the_config() -> None:
    cfg = config(
        pools=[
            {"name": "main", "backends": ["a", "b"], "picker": "least_load"},
            {"name": "spare", "backends": ["c"], "picker": "round_robin"},
        ],
        routes=[
            {"name": "llama", "pool": "main", "fallback": "spare", "max_new_tokens": 64},
            {"name": "solo", "backends": ["a"], "chat_template": "{{ messages[0].content }}"},
        ],
    )
    t = build_topology(cfg, cfg.backends)
    assert set(t.replicas) == {"a", "b", "c"}
    assert set(t.pools) == {"main", "spare", "solo"}
    main, solo = t.pools["main"], t.pools["solo"]
    assert [r.name for r in main.replicas] == ["a", "b"]
    assert isinstance(main.picker, LeastLoad)
    assert isinstance(t.pools["spare"].picker, RoundRobin)
    assert isinstance(solo.picker, PrefixAffinity)  # the default picker
    assert solo.replicas[0] is main.replicas[0]  # one replica object per backend
    llama = t.routes.resolve("llama")
    assert llama.target.arms == ((main, 1.0),) and llama.target.fallback is t.pools["spare"]
    assert llama.default_max_new_tokens == 64
    assert t.routes.resolve("").name == "llama"  # the first route is the default
    assert t.routes.resolve("solo").target.arms == ((solo, 1.0),)
    assert set(t.routing.templates.configured) == {"solo"}  # llama: its backends' own


def test_without_routes_each_backend_is_a_route_of_its_own() -> None:
    cfg = config()
    t = build_topology(cfg, cfg.backends)
    assert [r.name for r in t.routes] == ["a", "b", "c"]
    assert t.routes.resolve("b").replicas == (t.replicas["b"],)


def test_rules_route_by_the_requests_facts() -> None:
    cfg = config(
        pools=[{"name": "canary", "backends": ["c"]}],
        routes=[{"name": "r", "backends": ["a"]}],
        rules=[{"name": "beta", "when": {"field": "x-user-id", "prefix": "beta-"},
                "pool": "canary"}],
    )  # fmt: skip
    t = build_topology(cfg, cfg.backends)
    route = t.routes.resolve("r")
    target, rule = t.routing.router.target(route, Facts("r", "acme", 0, {"x-user-id": "beta-1"}))
    assert rule == "beta" and target.arms[0][0] is t.pools["canary"]
    assert t.routing.router.target(route, Facts("r", "acme", 0, {}))[1] == ""


def test_a_chat_template_that_does_not_compile_names_its_route() -> None:
    cfg = config(routes=[{"name": "r", "backends": ["a"], "chat_template": "{% for %}"}])
    with pytest.raises(ConfigError, match=r"routes\[0\]\.chat_template"):
        build_topology(cfg, cfg.backends)


def test_a_reload_keeps_unchanged_replicas_and_pools_and_replaces_the_rest() -> None:
    before_cfg = config(pools=[{"name": "main", "backends": ["a", "b"]}],
                        routes=[{"name": "r", "pool": "main"}])  # fmt: skip
    before = build_topology(before_cfg, before_cfg.backends)
    backends = [*BACKENDS[:2], {"name": "c", "url": "http://elsewhere:80"}]
    after_cfg = GatewayConfig.model_validate(
        {"backends": backends, "pools": [{"name": "main", "backends": ["a", "b"]}],
         "routes": [{"name": "r", "pool": "main"}]}
    )  # fmt: skip
    after = build_topology(after_cfg, after_cfg.backends, before)
    assert after.replicas["a"] is before.replicas["a"]
    assert after.pools["main"] is before.pools["main"]  # its picker and prefix index too
    assert after.replicas["c"] is not before.replicas["c"]  # its URL changed
    assert after.new_replicas(before) == [after.replicas["c"]]
    assert after.gone_replicas(before) == [before.replicas["c"]]


def test_draining_a_backend_keeps_its_replica() -> None:
    cfg = config()
    before = build_topology(cfg, cfg.backends)
    drained = [{**BACKENDS[0], "draining": True}, *BACKENDS[1:]]
    after_cfg = GatewayConfig.model_validate({"backends": drained})
    after = build_topology(after_cfg, after_cfg.backends, before)
    assert after.replicas["a"] is before.replicas["a"] and after.replicas["a"].draining
