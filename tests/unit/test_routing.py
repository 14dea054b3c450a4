"""Prefix hashes, the prefix index, replica pickers and pools."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from streamgate.backends import TGIBackend
from streamgate.config import GatewayConfig
from streamgate.routing import (
    AllOf,
    AnyOf,
    CircuitBreaker,
    CircuitState,
    Condition,
    Facts,
    FieldTest,
    LeastLoad,
    PickRequest,
    Pool,
    PowerOfTwo,
    PrefixAffinity,
    PrefixIndex,
    Replica,
    RoundRobin,
    Route,
    Router,
    Rule,
    Target,
    block_hashes,
    choose_arm,
)


def replica(name: str, in_flight: int = 0, healthy: bool = True) -> Replica:
    r = Replica(name=name, backend=TGIBackend(f"http://{name}:80", name=name), healthy=healthy)
    r.in_flight = in_flight
    return r


def test_block_hashes_are_a_chain_over_whole_blocks() -> None:
    a = block_hashes("x" * 100 + "A" * 50, "salt", 32, 100)
    b = block_hashes("x" * 100 + "B" * 50, "salt", 32, 100)
    assert len(a) == 4  # 150 bytes: 4 whole blocks of 32, the tail is ignored
    assert a[:3] == b[:3] and a[3] != b[3]  # equal up to the block where they differ
    assert block_hashes("x" * 100, "other tenant", 32, 100) != a[:3]
    assert len(block_hashes("x" * 1000, "s", 32, 5)) == 5
    # Same bytes, other position: a chain, not a set of block hashes.
    assert block_hashes("yyyy" + "zzzz", "s", 4, 9)[1] != block_hashes("zzzz", "s", 4, 9)[0]


def test_the_prefix_index_matches_leading_blocks_and_forgets_the_oldest() -> None:
    index = PrefixIndex(capacity=4)
    index.record("r1", [1, 2, 3])
    assert index.match("r1", [1, 2, 3, 4]) == 3
    assert index.match("r1", [9, 2, 3]) == 0
    assert index.match("r2", [1]) == 0
    index.record("r1", [7, 8])  # capacity 4: 1 is the least recently used
    assert index.size("r1") == 4 and index.match("r1", [1, 2]) == 0
    index.forget("r1")
    assert index.size("r1") == 0


def test_round_robin_and_least_load() -> None:
    a, b, c = replica("a"), replica("b", in_flight=2), replica("c")
    rr = RoundRobin()
    assert [rr.pick([a, b, c], PickRequest()).name for _ in range(6)] == list("bcabca")
    ll = LeastLoad()
    picks = {ll.pick([a, b, c], PickRequest()).name for _ in range(4)}
    assert picks == {"a", "c"}  # ties rotate; b is busier


def test_scraped_backend_gauges_count_in_the_load() -> None:
    a, b = replica("a", in_flight=1), replica("b")
    b.gauges.queue_size, b.gauges.batch_size = 5, 3  # other clients' work
    assert (a.load(), b.load()) == (1, 8)
    assert LeastLoad().pick([a, b], PickRequest()) is a


def test_power_of_two_takes_the_less_loaded_of_two() -> None:
    busy, idle = replica("busy", in_flight=10), replica("idle")
    picker = PowerOfTwo(random.Random(1))
    assert all(picker.pick([busy, idle], PickRequest()) is idle for _ in range(20))


def affinity(**settings: Any) -> PrefixAffinity:
    return PrefixAffinity(PrefixIndex(1000), **settings)


def test_prefix_affinity_sticks_to_the_replica_that_has_the_prefix() -> None:
    a, b, c = replica("a"), replica("b"), replica("c")
    picker = affinity()
    tenant_x = block_hashes("system prompt of x " * 20 + "question 1", "p\0x", 32, 64)
    first = picker.pick([a, b, c], PickRequest(tenant_x))
    first.in_flight += 1  # still running: the other replicas are less loaded now
    again = block_hashes("system prompt of x " * 20 + "another question", "p\0x", 32, 64)
    assert picker.pick([a, b, c], PickRequest(again)) is first


def test_a_miss_goes_to_the_least_loaded() -> None:
    a, b = replica("a", in_flight=3), replica("b", in_flight=1)
    picker = affinity()
    picker.index.record("a", [1, 2])
    assert picker.pick([a, b], PickRequest([5, 6, 7])) is b  # nobody has it
    assert picker.pick([a, b], PickRequest([1, 9, 9, 9, 9, 9, 9, 9])) is b  # 1/8 < min_match


def test_affinity_yields_to_load_when_the_pool_is_imbalanced() -> None:
    hot, cold = replica("hot", in_flight=40), replica("cold", in_flight=4)
    picker = affinity(balance_abs=32, balance_rel=1.5)
    picker.index.record("hot", [1, 2, 3])
    assert picker.pick([hot, cold], PickRequest([1, 2, 3])) is cold  # 36 apart and 10x
    hot.in_flight = 30  # 26 apart: within the absolute threshold
    assert affinity_for(hot, [1, 2, 3]).pick([hot, cold], PickRequest([1, 2, 3])) is hot


def affinity_for(owner: Replica, hashes: list[int]) -> PrefixAffinity:
    picker = affinity(balance_abs=32, balance_rel=1.5)
    picker.index.record(owner.name, hashes)
    return picker


def tenant_prompt(tenant: int, n: int) -> list[int]:
    return block_hashes(f"tenant {tenant} system " * 30 + f"q{n}", f"p\0{tenant}", 32, 64)


def run(
    picker: PrefixAffinity, replicas: list[Replica], tenants: list[int], window: int
) -> dict[int, set[str]]:
    """Route one request per entry of `tenants`, `window` of them in flight at once."""
    homes: dict[int, set[str]] = {}
    running: list[Replica] = []
    for n, tenant in enumerate(tenants):
        chosen = picker.pick(replicas, PickRequest(tenant_prompt(tenant, n)))
        homes.setdefault(tenant, set()).add(chosen.name)
        chosen.in_flight += 1
        running.append(chosen)
        if len(running) > window:
            running.pop(0).in_flight -= 1
        loads = [r.load() for r in replicas]
        assert not (
            max(loads) - min(loads) > picker.balance_abs + 1
            and max(loads) > picker.balance_rel * min(loads) + 1
        )  # never beyond the thresholds (one request of slack: the one just placed)
    return homes


def test_tenants_stay_on_one_replica_while_loads_are_within_the_thresholds() -> None:
    replicas = [replica(f"r{i}") for i in range(4)]
    tenants = [n % 16 if n % 2 else 0 for n in range(400)]  # half the traffic is tenant 0
    homes = run(affinity(), replicas, tenants, window=8)
    assert all(len(h) == 1 for h in homes.values())  # 100% sticky
    assert len(set().union(*homes.values())) == 4  # and the pool is used


def test_a_hot_tenant_spills_over_instead_of_overloading_its_replica() -> None:
    replicas = [replica(f"r{i}") for i in range(4)]
    homes = run(affinity(), replicas, [0] * 400, window=100)
    assert len(homes[0]) > 1


def test_pools_pick_among_healthy_untried_replicas_and_hash_only_for_affinity() -> None:
    a, b, down = replica("a"), replica("b"), replica("down", healthy=False)
    pool = Pool("p", (a, b, down), LeastLoad())
    assert pool.request("x" * 1000, "s").hashes == ()
    assert pool.pick(PickRequest(), exclude={a}) is b
    assert pool.pick(PickRequest(), exclude={a, b}) is None
    assert pool.has_alternative({a}) and not pool.has_alternative({a, b})
    prefix_pool = Pool("p", (a,), affinity(), block_bytes=100, max_blocks=3)
    assert len(prefix_pool.request("x" * 1000, "s").hashes) == 3


def test_pools_in_the_config() -> None:
    backends = [{"name": n, "url": f"http://{n}:80"} for n in ("a", "b")]
    config = GatewayConfig.model_validate(
        {
            "backends": backends,
            "pools": [{"name": "main", "backends": ["a", "b"], "picker": "least_load"}],
            "routes": [{"name": "llama", "pool": "main"}, {"name": "solo", "backends": ["a"]}],
        }
    )
    assert [p.name for p in config.effective_pools()] == ["main", "solo"]
    with pytest.raises(ValueError, match="unknown pool 'nope'"):
        GatewayConfig.model_validate(
            {"backends": backends, "routes": [{"name": "r", "pool": "nope"}]}
        )
    with pytest.raises(ValueError, match="set one of backends, pool and split"):
        GatewayConfig.model_validate(
            {"backends": backends, "routes": [{"name": "r", "backends": ["a"], "pool": "x"}]}
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    circuit = CircuitBreaker(failures_to_open=3, open_seconds=5, max_open_seconds=12, clock=clock)
    assert not circuit.record_failure() and not circuit.record_failure()
    circuit.record_success()  # a success in between: the count starts again
    assert not circuit.record_failure() and not circuit.record_failure()
    assert circuit.record_failure() and circuit.state is CircuitState.OPEN
    assert not circuit.available()
    clock.now = 5.0
    assert circuit.state is CircuitState.HALF_OPEN and circuit.available()
    circuit.on_send()  # the probe
    assert not circuit.available()  # one probe at a time
    assert circuit.record_failure()  # failed probe: open for twice as long
    clock.now = 14.9
    assert not circuit.available()
    clock.now = 15.0
    circuit.on_send()
    assert circuit.record_failure()  # 20 s, capped at 12
    clock.now = 27.0
    circuit.on_send()
    circuit.record_success()
    assert circuit.state is CircuitState.CLOSED and circuit.available()


def test_an_open_circuit_takes_the_replica_out_of_the_pool() -> None:
    a, b = replica("a"), replica("b")
    for _ in range(a.circuit.failures_to_open):
        a.circuit.record_failure()
    pool = Pool("p", (a, b), RoundRobin())
    assert {pool.pick(PickRequest()) for _ in range(4)} == {b}
    assert not pool.has_alternative({b})
    b.draining = True
    assert pool.pick(PickRequest()) is None


def test_a_weighted_split_is_within_3_percent_and_sticky() -> None:
    arms = [("stable", 90.0), ("canary", 10.0)]
    users = [f"user-{i}" for i in range(2000)]
    first = {u: choose_arm(u, arms) for u in users}
    canary = sum(1 for arm in first.values() if arm == 1) / len(users)
    assert abs(canary - 0.10) <= 0.03
    assert all(choose_arm(u, arms) == first[u] for u in users)  # 100% sticky


def test_moving_canary_weight_moves_only_that_share_of_users() -> None:
    users = [f"user-{i}" for i in range(4000)]
    before = {u: choose_arm(u, [("stable", 95.0), ("canary", 5.0)]) for u in users}
    after = {u: choose_arm(u, [("stable", 90.0), ("canary", 10.0)]) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert abs(len(moved) / len(users) - 0.05) <= 0.015
    assert all(after[u] == 1 for u in moved)  # only into the arm that grew
    # With three arms, a shrinking arm gives keys to every other arm in proportion: moving 5%
    # of the weight from b to c moves about 7.5% of the keys (b -> a, a -> c, b -> c).
    before = {u: choose_arm(u, [("a", 50.0), ("b", 45.0), ("c", 5.0)]) for u in users}
    after = {u: choose_arm(u, [("a", 50.0), ("b", 40.0), ("c", 10.0)]) for u in users}
    assert sum(before[u] != after[u] for u in users) / len(users) <= 0.09


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


def test_the_first_matching_rule_wins_else_the_routes_target() -> None:
    a, b, c = (Pool(n, (replica(n),), RoundRobin()) for n in "abc")
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


def test_the_fallback_pool_serves_when_the_primary_has_no_replica() -> None:
    primary = Pool("big", (replica("b1", healthy=False),), RoundRobin())
    small = Pool("small", (replica("s1"),), RoundRobin())
    target = Target(((primary, 1.0),), fallback=small)
    assert target.choose("k") is small
    primary.replicas[0].healthy = True
    assert target.choose("k") is primary


def test_kv_pressure_breaks_ties_between_equally_busy_replicas() -> None:
    full, roomy = replica("full", in_flight=2), replica("roomy", in_flight=2)
    full.gauges.batch_tokens_fraction = 0.9
    assert LeastLoad().pick([full, roomy], PickRequest()) is roomy
    assert LeastLoad().pick([roomy, full], PickRequest()) is roomy
