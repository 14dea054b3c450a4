"""Replica pickers: round robin, least load, power of two, and prefix affinity with its load
guard."""

from __future__ import annotations

import random
from typing import Any

from streamgate.routing import (
    Lease,
    LeastLoad,
    PickRequest,
    PowerOfTwo,
    PrefixAffinity,
    PrefixIndex,
    Replica,
    RoundRobin,
    block_hashes,
)
from support.routes import replica


def test_round_robin_and_least_load() -> None:
    a, b, c = replica("a"), replica("b", in_flight=2), replica("c")
    rr = RoundRobin()
    assert [rr.pick([a, b, c], PickRequest()).name for _ in range(6)] == list("bcabca")
    ll = LeastLoad()
    picks = {ll.pick([a, b, c], PickRequest()).name for _ in range(4)}
    assert picks == {"a", "c"}  # ties rotate; b is busier


def test_least_load_counts_the_scraped_backend_gauges() -> None:
    a, b = replica("a", in_flight=1), replica("b")
    b.gauges.queue_size, b.gauges.batch_size = 5, 3  # other clients' work
    assert LeastLoad().pick([a, b], PickRequest()) is a


def test_power_of_two_takes_the_less_loaded_of_two() -> None:
    busy, idle = replica("busy", in_flight=10), replica("idle")
    picker = PowerOfTwo(random.Random(1))
    assert all(picker.pick([busy, idle], PickRequest()) is idle for _ in range(20))


def test_kv_pressure_breaks_ties_between_equally_busy_replicas() -> None:
    full, roomy = replica("full", in_flight=2), replica("roomy", in_flight=2)
    full.gauges.batch_tokens_fraction = 0.9
    assert LeastLoad().pick([full, roomy], PickRequest()) is roomy
    assert LeastLoad().pick([roomy, full], PickRequest()) is roomy


def affinity(**settings: Any) -> PrefixAffinity:
    return PrefixAffinity(PrefixIndex(1000), **settings)


def test_prefix_affinity_sticks_to_the_replica_that_has_the_prefix() -> None:
    a, b, c = replica("a"), replica("b"), replica("c")
    picker = affinity()
    tenant_x = block_hashes("system prompt of x " * 20 + "question 1", "p\0x", 32, 64)
    first = picker.pick([a, b, c], PickRequest(tenant_x))
    first.lease()  # still running: the other replicas are less loaded now
    again = block_hashes("system prompt of x " * 20 + "another question", "p\0x", 32, 64)
    assert picker.pick([a, b, c], PickRequest(again)) is first


def test_a_miss_goes_to_the_least_loaded() -> None:
    a, b = replica("a", in_flight=3), replica("b", in_flight=1)
    picker = affinity()
    picker.index.record("a", [1, 2])
    assert picker.pick([a, b], PickRequest([5, 6, 7])) is b  # nobody has it
    assert picker.pick([a, b], PickRequest([1, 9, 9, 9, 9, 9, 9, 9])) is b  # 1/8 < min_match


def test_affinity_yields_to_load_when_the_pool_is_imbalanced() -> None:
    hot, cold = replica("hot"), replica("cold", in_flight=4)
    running = [hot.lease() for _ in range(40)]
    picker = affinity(balance_abs=32, balance_rel=1.5)
    picker.index.record("hot", [1, 2, 3])
    assert picker.pick([hot, cold], PickRequest([1, 2, 3])) is cold  # 36 apart and 10x
    for lease in running[30:]:
        lease.release()  # 26 apart: within the absolute threshold
    assert hot.in_flight == 30
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
    running: list[Lease] = []
    for n, tenant in enumerate(tenants):
        chosen = picker.pick(replicas, PickRequest(tenant_prompt(tenant, n)))
        homes.setdefault(tenant, set()).add(chosen.name)
        running.append(chosen.lease())
        if len(running) > window:
            running.pop(0).release()
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
