"""A replica's live state: requests in flight counted by leases, `idle` while none, its load
and whether new requests may go to it."""

from __future__ import annotations

import asyncio

from support.routes import backend_info, replica


def test_a_lease_counts_a_request_until_it_is_released_once() -> None:
    r = replica("a")
    assert r.in_flight == 0 and r.idle.is_set()
    first, second = r.lease(), r.lease()
    assert r.in_flight == 2 and not r.idle.is_set()
    first.release()
    first.release()  # idempotent: counted once
    assert r.in_flight == 1 and not r.idle.is_set()
    second.release()
    assert r.in_flight == 0 and r.idle.is_set()


def test_a_lease_is_released_when_its_with_block_ends_even_by_an_error() -> None:
    r = replica("a")
    with r.lease():
        assert r.in_flight == 1
    assert r.in_flight == 0
    try:
        with r.lease():
            raise ValueError("the stream failed")
    except ValueError:
        pass
    assert r.in_flight == 0 and r.idle.is_set()


async def test_idle_wakes_whoever_waits_for_the_last_request_to_end() -> None:
    r = replica("a")
    lease = r.lease()
    waiter = asyncio.create_task(r.idle.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    lease.release()
    async with asyncio.timeout(10):
        await waiter


def test_scraped_backend_gauges_count_in_the_load() -> None:
    a, b = replica("a", in_flight=1), replica("b")
    b.gauges.queue_size, b.gauges.batch_size = 5, 3  # other clients' work
    assert (a.load(), b.load()) == (1, 8)
    b.gauges.batch_tokens_fraction = 0.5  # KV pressure breaks ties
    assert b.load() == 8.5
    c = replica("c", in_flight=9)
    c.gauges.queue_size = 2  # the gauges lag: this gateway's own count wins when larger
    assert c.load() == 9


def test_only_a_healthy_replica_not_draining_with_a_closed_circuit_is_routable() -> None:
    r = replica("a")
    assert r.routable()
    r.draining = True
    assert not r.routable()
    r.draining, r.healthy = False, False
    assert not r.routable()
    r.healthy = True
    for _ in range(r.circuit.failures_to_open):
        r.circuit.record_failure()
    assert not r.routable()


def test_the_model_id_is_the_configured_label_else_infos_else_the_name() -> None:
    assert replica("a").model_id == "a"
    r = replica("a", info=backend_info(model_id="org/model"))
    assert r.model_id == "org/model"
    r.model_label = "friendly"
    assert r.model_id == "friendly"
