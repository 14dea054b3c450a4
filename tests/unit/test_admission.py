"""Token buckets, quotas and the admission queue (a fake clock wherever time matters)."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from streamgate.admission import (
    AdmissionQueue,
    QueueFull,
    QueueTimeout,
    Quota,
    QuotaExceeded,
    QuotaLimits,
    TokenBucket,
    reserve,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---- buckets ------------------------------------------------------------------------------------


def test_a_bucket_starts_full_and_refills_continuously() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # 1 unit a second
    assert bucket.take(60) == 0.0 and bucket.available() == 0
    assert bucket.take(10) == pytest.approx(10.0)  # nothing taken
    clock.now += 4
    assert bucket.wait_time(10) == pytest.approx(6.0)
    clock.now += 600
    assert bucket.available() == 60  # capped at the capacity


def test_more_than_the_capacity_never_fits() -> None:
    bucket = TokenBucket(10, clock=Clock())
    assert bucket.take(11) == math.inf and bucket.available() == 10


def test_refunds_are_capped_and_charges_can_go_negative() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    bucket.take(30)
    bucket.give(100)
    assert bucket.available() == 60
    bucket.charge(90)
    assert bucket.available() == -30
    assert bucket.wait_time(1) == pytest.approx(31.0)
    assert bucket.seconds_to_full() == pytest.approx(90.0)


# ---- quotas -------------------------------------------------------------------------------------


def test_all_or_nothing_across_the_tenant_and_the_key() -> None:
    clock = Clock()
    tenant = Quota("tenant acme", QuotaLimits(tokens_per_minute=1000), clock)
    key = Quota("key acme/ci", QuotaLimits(requests_per_minute=1), clock)
    reserve([tenant, key], 100).settle(100)
    with pytest.raises(QuotaExceeded) as caught:
        reserve([tenant, key], 100)
    assert (caught.value.subject, caught.value.kind) == ("key acme/ci", "requests")
    assert caught.value.retry_after == pytest.approx(60.0)
    assert tenant.remaining().tokens == 900  # the refused request took nothing


def test_settling_refunds_unused_tokens_once_and_charges_excess() -> None:
    quota = Quota("t", QuotaLimits(tokens_per_minute=1000), Clock())
    reservation = reserve([quota], 300)
    assert quota.remaining().tokens == 700
    reservation.settle(100)
    reservation.settle(0)  # a second settle changes nothing
    assert reservation.settled and quota.remaining().tokens == 900
    reserve([quota], 100).settle(250)  # used more than reserved: the rest is charged
    assert quota.remaining().tokens == 650


def test_concurrent_streams_are_held_until_settled() -> None:
    quota = Quota("t", QuotaLimits(max_concurrent_streams=2), Clock())
    first, second = reserve([quota], 1), reserve([quota], 1)
    with pytest.raises(QuotaExceeded) as caught:
        reserve([quota], 1)
    assert caught.value.kind == "streams" and caught.value.retry_after is None
    first.settle(1)
    reserve([quota], 1)
    second.settle(1)
    assert quota.open_streams == 1


def test_a_request_larger_than_the_limit_can_never_pass() -> None:
    quota = Quota("tenant t", QuotaLimits(tokens_per_minute=1000), Clock())
    with pytest.raises(QuotaExceeded) as caught:
        reserve([quota], 1001)
    err = caught.value
    assert err.never and err.limit == 1000 and err.retry_after is None
    assert "1001" in str(err) and str(err).startswith("tenant t:")


def test_the_refusal_with_the_longest_wait_is_reported() -> None:
    clock = Clock()
    requests = Quota("a", QuotaLimits(requests_per_minute=60), clock)  # 1 s per request
    tokens = Quota("b", QuotaLimits(tokens_per_minute=60), clock)  # 1 s per token
    reserve([requests, tokens], 60)
    with pytest.raises(QuotaExceeded) as caught:
        reserve([requests, tokens], 30)
    assert caught.value.subject == "b" and caught.value.retry_after == pytest.approx(30.0)


def test_racing_reservations_cannot_overshoot() -> None:
    """50 reservations of 100 tokens against 1,000 a minute, at one instant: exactly 10 pass."""
    quota = Quota("t", QuotaLimits(tokens_per_minute=1000), Clock())
    passed = []
    for _ in range(50):
        with contextlib.suppress(QuotaExceeded):
            passed.append(reserve([quota], 100))
    assert len(passed) == 10
    for reservation in passed:
        reservation.settle(60)
    assert quota.remaining().tokens == 400  # 10 x 40 refunded


# ---- the admission queue ------------------------------------------------------------------------


async def test_granted_at_once_while_slots_are_free() -> None:
    queue = AdmissionQueue(max_active=2, max_queued=2, max_wait=1.0)
    a, b = await queue.acquire(0), await queue.acquire(0)
    assert (queue.active, a.waited, b.waited) == (2, 0.0, 0.0)
    a.release()
    a.release()  # idempotent
    assert queue.active == 1


async def test_waiters_run_by_priority_then_arrival() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=10, max_wait=10.0)
    holder = await queue.acquire(0)
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        slot = await queue.acquire(priority)
        order.append(name)
        slot.release()

    tasks = []
    for name, priority in (("low-1", 1), ("mid", 5), ("low-2", 1), ("high", 9), ("mid-2", 5)):
        tasks.append(asyncio.create_task(wait(name, priority)))
        await asyncio.sleep(0)
    assert queue.queued == 5
    holder.release()
    await asyncio.gather(*tasks)
    assert order == ["high", "mid", "mid-2", "low-1", "low-2"]
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_newcomer_does_not_overtake_the_queue() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=10, max_wait=10.0)
    holder = await queue.acquire(0)
    waiting = asyncio.create_task(queue.acquire(0))
    await asyncio.sleep(0)
    holder.release()  # handed to the waiter, not left free for anyone
    newcomer = asyncio.create_task(queue.acquire(9))
    slot = await waiting
    assert not newcomer.done() and queue.queued == 1
    slot.release()
    (await newcomer).release()
    assert queue.active == 0


async def test_a_full_queue_refuses_at_once() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=1, max_wait=10.0)
    holder = await queue.acquire(0)
    waiting = asyncio.create_task(queue.acquire(0))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as caught:
        await queue.acquire(0)
    assert caught.value.queued == 1 and caught.value.retry_after > 0
    holder.release()
    (await waiting).release()


async def test_the_wait_ends_at_the_earlier_of_max_wait_and_the_deadline() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    with pytest.raises(QueueTimeout) as caught:
        await queue.acquire(0, deadline_in=0.05)
    assert caught.value.retry_after > 0
    assert queue.queued == 0  # gone from the queue
    short = AdmissionQueue(max_active=1, max_queued=5, max_wait=0.05)
    other = await short.acquire(0)
    with pytest.raises(QueueTimeout):
        await short.acquire(0, deadline_in=10.0)
    holder.release()
    other.release()
    assert (queue.active, short.active, short.queued) == (0, 0, 0)


async def test_a_cancelled_waiter_leaves_at_once() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    first = asyncio.create_task(queue.acquire(0))
    second = asyncio.create_task(queue.acquire(0))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert queue.queued == 1
    holder.release()
    (await second).release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    first = asyncio.create_task(queue.acquire(0))
    second = asyncio.create_task(queue.acquire(0))
    await asyncio.sleep(0)
    holder.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    (await second).release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_thousand_cancelled_waits_leave_nothing_behind() -> None:
    queue = AdmissionQueue(max_active=2, max_queued=2000, max_wait=10.0)
    holders = [await queue.acquire(0), await queue.acquire(0)]
    for i in range(1000):
        task = asyncio.create_task(queue.acquire(i % 10))
        await asyncio.sleep(0)
        if i % 3 == 0:
            holders.pop().release()  # sometimes the slot is handed over as the wait is cancelled
        task.cancel()
        result = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(result[0], BaseException):
            holders.append(result[0])
        while len(holders) < 2:
            holders.append(await queue.acquire(0))
    for slot in holders:
        slot.release()
    assert (queue.active, queue.queued) == (0, 0)
