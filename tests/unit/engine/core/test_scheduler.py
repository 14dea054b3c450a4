"""Continuous batching decisions: admission, budgets, FIFO, preemption."""

from streamgate.engine.core.block_manager import BlockManager
from streamgate.engine.core.scheduler import Scheduler
from streamgate.engine.core.sequence import SamplingParams, Sequence, SequenceStatus


def seq(n: int, first: int = 0) -> Sequence:
    return Sequence(prompt_ids=list(range(first, first + n)), params=SamplingParams())


def run_step(sched: Scheduler) -> tuple[list[Sequence], list[Sequence]]:
    batch = sched.schedule()
    for s in batch.sequences:
        s.num_computed_tokens = s.num_tokens
        sched.blocks.commit(s)
        s.token_ids.append(7)  # the token sampled this step
    return batch.prefills, batch.decodes


def test_new_requests_join_the_running_batch_at_the_next_step() -> None:
    sched = Scheduler(BlockManager(64, 4, True), max_batch_prefill_tokens=100, max_batch_size=8)
    a = seq(5)
    sched.add(a)
    prefills, decodes = run_step(sched)
    assert prefills == [a] and decodes == []
    b = seq(3, first=100)
    sched.add(b)
    prefills, decodes = run_step(sched)
    assert prefills == [b] and decodes == [a]
    prefills, decodes = run_step(sched)
    assert prefills == [] and decodes == [a, b]


def test_prefill_budget_and_batch_size_bound_admission() -> None:
    sched = Scheduler(BlockManager(64, 4, True), max_batch_prefill_tokens=10, max_batch_size=3)
    seqs = [seq(6, first=10 * i) for i in range(5)]
    for s in seqs:
        sched.add(s)
    prefills, _ = run_step(sched)
    assert prefills == seqs[:1]  # 6 + 6 > 10
    prefills, _ = run_step(sched)
    assert prefills == seqs[1:2]
    prefills, _ = run_step(sched)
    assert prefills == seqs[2:3]
    prefills, decodes = run_step(sched)
    assert prefills == [] and len(decodes) == 3  # batch size reached


def test_a_prompt_longer_than_the_budget_still_runs_alone() -> None:
    sched = Scheduler(BlockManager(64, 4, True), max_batch_prefill_tokens=4, max_batch_size=8)
    a = seq(20)
    sched.add(a)
    prefills, _ = run_step(sched)
    assert prefills == [a]


def test_preemption_frees_the_newest_and_requeues_it_first() -> None:
    # 4 blocks of 4 tokens: two sequences of 7 tokens fill them as they grow.
    sched = Scheduler(BlockManager(4, 4, False), max_batch_prefill_tokens=100, max_batch_size=8)
    a, b = seq(4), seq(3, first=50)
    sched.add(a)
    sched.add(b)
    prefills, _ = run_step(sched)
    assert prefills == [a, b]
    for _ in range(5):
        run_step(sched)
    assert sched.preemptions_total == 1
    assert b.status is SequenceStatus.WAITING and sched.waiting[0] is b
    assert b.block_table == [] and b.num_computed_tokens == 0
    assert a.status is SequenceStatus.RUNNING
    # Once `a` finishes, `b` is recomputed with its generated tokens kept.
    generated = b.num_generated
    sched.remove(a)
    prefills, _ = run_step(sched)
    assert prefills == [b] and b.num_generated == generated + 1


def test_strict_fifo_when_the_head_does_not_fit() -> None:
    sched = Scheduler(BlockManager(4, 4, False), max_batch_prefill_tokens=100, max_batch_size=8)
    big, small = seq(16), seq(2, first=90)
    running = seq(4, first=40)
    sched.add(running)
    run_step(sched)
    sched.add(big)
    sched.add(small)
    prefills, _ = run_step(sched)
    assert prefills == []  # `small` would fit but does not overtake `big`


def test_remove_frees_blocks_of_waiting_and_running() -> None:
    bm = BlockManager(8, 4, True)
    sched = Scheduler(bm, max_batch_prefill_tokens=100, max_batch_size=8)
    a, b = seq(5), seq(5, first=20)
    sched.add(a)
    run_step(sched)
    sched.add(b)
    sched.remove(a)
    sched.remove(b)
    assert not sched.has_work()
    assert bm.num_free == 8
