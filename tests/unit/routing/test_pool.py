"""Pools: a pick among the routable replicas not tried yet; prefix hashes only for affinity."""

from __future__ import annotations

from streamgate.routing import LeastLoad, PickRequest, Pool, PrefixAffinity, PrefixIndex, RoundRobin
from support.routes import backend_info, replica


def test_pools_pick_among_healthy_untried_replicas_and_hash_only_for_affinity() -> None:
    a, b, down = replica("a"), replica("b"), replica("down", healthy=False)
    pool = Pool("p", (a, b, down), LeastLoad())
    assert pool.request("x" * 1000, "s").hashes == ()
    assert pool.pick(PickRequest(), exclude={a}) is b
    assert pool.pick(PickRequest(), exclude={a, b}) is None
    assert pool.has_alternative({a}) and not pool.has_alternative({a, b})
    prefix_pool = Pool("p", (a,), PrefixAffinity(PrefixIndex(1000)), block_bytes=100, max_blocks=3)
    assert len(prefix_pool.request("x" * 1000, "s").hashes) == 3


def test_an_open_circuit_takes_the_replica_out_of_the_pool() -> None:
    a, b = replica("a"), replica("b")
    for _ in range(a.circuit.failures_to_open):
        a.circuit.record_failure()
    pool = Pool("p", (a, b), RoundRobin())
    assert {pool.pick(PickRequest()) for _ in range(4)} == {b}
    assert not pool.has_alternative({b})
    b.draining = True
    assert pool.pick(PickRequest()) is None


def test_the_model_identity_has_every_model_id_and_revision_once() -> None:
    a = replica("a", info=backend_info(model_id="org/m"))
    b = replica("b", info=backend_info(model_id="org/m"))
    assert Pool("p", (a, b), RoundRobin()).model_identity() == "org/m@"
    unknown = replica("c")
    assert Pool("p", (a, unknown), RoundRobin()).model_identity() == "c,org/m@"


def test_a_restarted_replica_is_forgotten_by_the_affinity_index() -> None:
    a = replica("a")
    picker = PrefixAffinity(PrefixIndex(1000))
    picker.index.record("a", [1, 2])
    Pool("p", (a,), picker).forget(a)
    assert picker.index.size("a") == 0
