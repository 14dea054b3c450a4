"""The admission queue: grants, order, refusals, timeouts, and cancellations that leak nothing."""

from __future__ import annotations

import asyncio

import pytest

from streamgate.admission import AdmissionQueue, QueueFull, QueueTimeout, Slot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_granted_at_once_while_slots_are_free() -> None:
    queue = AdmissionQueue(max_active=2, max_queued=0, max_wait=1.0)
    a, b = await queue.acquire(0), await queue.acquire(0)
    assert (queue.active, queue.queued, a.waited, b.waited) == (2, 0, 0.0, 0.0)
    a.release()
    a.release()  # idempotent
    assert queue.active == 1
    b.release()
    assert queue.active == 0


async def test_waiters_are_served_first_come_first_served() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=10, max_wait=10.0)
    holder = await queue.acquire(0)
    tasks = [asyncio.create_task(queue.acquire(3)) for _ in range(4)]
    await settle()
    assert queue.queued == 4
    holder.release()
    for i, task in enumerate(tasks):
        await settle()
        assert [t.done() for t in tasks] == [j <= i for j in range(4)]
        task.result().release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_higher_priority_first_then_arrival() -> None:
    queue = AdmissionQueue(max_active=2, max_queued=10, max_wait=10.0)
    holders = [await queue.acquire(0), await queue.acquire(0)]
    granted: list[str] = []
    slots: dict[str, Slot] = {}

    async def wait(name: str, priority: int) -> None:
        slots[name] = await queue.acquire(priority)
        granted.append(name)

    tasks = []
    for name, priority in (("low-1", 1), ("mid-1", 5), ("low-2", 1), ("high", 9), ("mid-2", 5)):
        tasks.append(asyncio.create_task(wait(name, priority)))
        await settle()
    assert (queue.active, queue.queued) == (2, 5)
    holders[0].release()  # one slot at a time: each goes to the best waiter left
    await settle()
    assert granted == ["high"]
    holders[1].release()
    await settle()
    assert granted == ["high", "mid-1"]
    for name in ("high", "mid-1", "mid-2"):
        slots[name].release()
        await settle()
    assert granted == ["high", "mid-1", "mid-2", "low-1", "low-2"]
    assert (queue.active, queue.queued) == (2, 0)
    slots["low-1"].release()
    slots["low-2"].release()
    await asyncio.gather(*tasks)
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_newcomer_does_not_overtake_the_queue() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=10, max_wait=10.0)
    holder = await queue.acquire(0)
    waiting = asyncio.create_task(queue.acquire(0))
    await settle()
    holder.release()  # handed to the waiter, not left free for anyone
    newcomer = asyncio.create_task(queue.acquire(9))
    await settle()
    assert waiting.done() and not newcomer.done()
    assert (queue.active, queue.queued) == (1, 1)
    waiting.result().release()
    (await newcomer).release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_waited_is_measured_on_the_clock() -> None:
    clock = Clock()
    queue = AdmissionQueue(max_active=1, max_queued=1, max_wait=10.0, clock=clock)
    holder = await queue.acquire(0)
    waiting = asyncio.create_task(queue.acquire(0))
    await settle()
    clock.now += 3.0
    holder.release()
    slot = await waiting
    assert slot.waited == 3.0
    slot.release()


async def test_a_full_queue_refuses_at_once() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=2, max_wait=10.0)
    holder = await queue.acquire(0)
    waiting = [asyncio.create_task(queue.acquire(0)) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull) as caught:
        await queue.acquire(99)  # a high priority does not help either
    assert caught.value.queued == 2 and caught.value.retry_after == 1.0
    assert queue.queued == 2
    holder.release()
    for task in waiting:
        (await task).release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_the_wait_ends_at_the_callers_deadline() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    with pytest.raises(QueueTimeout) as caught:
        await queue.acquire(0, deadline_in=0.05)
    assert caught.value.waited >= 0.0 and caught.value.retry_after > 0
    assert queue.queued == 0  # gone from the queue
    holder.release()  # nobody to hand it to
    assert (queue.active, queue.queued) == (0, 0)


async def test_the_wait_ends_at_max_wait() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=0.05)
    holder = await queue.acquire(0)
    with pytest.raises(QueueTimeout):
        await queue.acquire(0, deadline_in=10.0)
    with pytest.raises(QueueTimeout):
        await queue.acquire(0)
    assert queue.queued == 0
    holder.release()
    assert queue.active == 0


async def test_a_passed_deadline_times_out_at_once() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    with pytest.raises(QueueTimeout):
        await queue.acquire(0, deadline_in=-1.0)
    assert queue.queued == 0
    holder.release()


async def test_a_cancelled_waiter_leaves_at_once() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    first = asyncio.create_task(queue.acquire(5))
    second = asyncio.create_task(queue.acquire(0))
    await settle()
    assert queue.queued == 2
    first.cancel()
    await settle()
    assert first.cancelled()
    assert queue.queued == 1
    holder.release()  # goes to `second`, not to the departed `first`
    await settle()
    assert second.done()
    second.result().release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    first = asyncio.create_task(queue.acquire(0))
    second = asyncio.create_task(queue.acquire(0))
    await settle()
    holder.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await settle()
    assert first.cancelled()  # the caller's cancellation is not swallowed
    assert second.done() and (queue.active, queue.queued) == (1, 0)
    second.result().release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_handed_over_slot_with_nobody_left_becomes_free() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=10.0)
    holder = await queue.acquire(0)
    waiting = asyncio.create_task(queue.acquire(0))
    await settle()
    holder.release()
    waiting.cancel()
    await settle()
    assert waiting.cancelled()
    assert (queue.active, queue.queued) == (0, 0)


async def test_a_free_slot_is_not_kept_from_a_newcomer_by_a_departing_waiter() -> None:
    """A waiter is cancelled, then the slot is freed before the waiter has run: a newcomer
    arriving in between gets the free slot at once (it must not queue behind nobody)."""
    queue = AdmissionQueue(max_active=1, max_queued=5, max_wait=0.5)
    holder = await queue.acquire(0)
    leaving = asyncio.create_task(queue.acquire(0))
    await settle()
    leaving.cancel()
    holder.release()  # `leaving` has not run its cancellation yet
    slot = await queue.acquire(0)  # the newcomer runs first
    assert slot.waited == 0.0
    await settle()
    assert leaving.cancelled()
    slot.release()
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
        result = (await asyncio.gather(task, return_exceptions=True))[0]
        if isinstance(result, Slot):  # it ran and got the slot before the cancellation
            holders.append(result)
        assert queue.queued == 0
        while len(holders) < 2:
            holders.append(await queue.acquire(0))
    for slot in holders:
        slot.release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_departed_waiters_do_not_pile_up_in_the_heap() -> None:
    queue = AdmissionQueue(max_active=1, max_queued=5000, max_wait=10.0)
    holder = await queue.acquire(0)
    high = asyncio.create_task(queue.acquire(9))  # stays on top of the heap
    for _ in range(1000):
        task = asyncio.create_task(queue.acquire(0))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert queue.queued == 1
    assert len(queue._heap) < 200
    holder.release()
    (await high).release()
    assert (queue.active, queue.queued) == (0, 0)


async def test_retry_after_follows_the_mean_hold_time() -> None:
    clock = Clock()
    queue = AdmissionQueue(max_active=2, max_queued=10, max_wait=30.0, clock=clock)
    assert queue.retry_after() == 1.0  # nothing released yet
    slot = await queue.acquire(0)
    clock.now += 2.0
    slot.release()
    assert queue.retry_after() == pytest.approx(2.0 * 1 / 2)
    slot = await queue.acquire(0)
    clock.now += 7.0
    slot.release()
    mean = 0.8 * 2.0 + 0.2 * 7.0
    assert queue.retry_after() == pytest.approx(mean / 2)
    holders = [await queue.acquire(0), await queue.acquire(0)]
    waiting = [asyncio.create_task(queue.acquire(0)) for _ in range(3)]
    await settle()
    assert queue.retry_after() == pytest.approx(mean * 4 / 2)
    for task in waiting:
        task.cancel()
    await settle()
    for holder in holders:
        holder.release()  # held 0 s


async def test_retry_after_is_clamped() -> None:
    clock = Clock()
    queue = AdmissionQueue(max_active=1, max_queued=10, max_wait=5.0, clock=clock)
    slot = await queue.acquire(0)
    slot.release()  # held 0 s
    assert queue.retry_after() == 0.05
    slot = await queue.acquire(0)
    clock.now += 100.0
    slot.release()
    assert queue.retry_after() == 5.0
