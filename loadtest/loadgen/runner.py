"""Driving a target with a plan: a closed loop (N streams at once, each starting the next
request when its call ends) or an open loop (Poisson arrivals at R requests/s, whatever the
target's state: what a service's users do).

In an open loop the generator itself can fall behind its schedule (one Python process on a
shared machine): each request's lag, its start minus its scheduled time, is kept, so that a
report says whether the arrivals were the ones asked for.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from loadtest.loadgen.plan import Planned
from loadtest.loadgen.record import Expected, Record, is_expected
from loadtest.loadgen.targets import Target

__all__ = ["Load", "Progress", "RunResult", "run_load"]


@dataclass(frozen=True)
class Load:
    """How requests arrive: `concurrency` streams (closed loop) or `rate` per second (open)."""

    concurrency: int | None = None
    rate: float | None = None
    max_in_flight: int = 5000
    """Open loop: arrivals wait beyond this many calls in flight (bounds the generator)."""
    ramp: float = 0.0
    """Closed loop: the streams' first calls start evenly spread over this many seconds
    (0: all at once, a burst of `concurrency` new calls)."""
    seed: int = 1

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of a concurrency (closed loop) and a rate")
        if (self.concurrency is not None and self.concurrency < 1) or (
            self.rate is not None and self.rate <= 0
        ):
            raise ValueError("the concurrency and the rate must be positive")
        if self.ramp < 0 or (self.ramp and self.concurrency is None):
            raise ValueError("a ramp is for a closed loop only, and at least 0 s")

    def describe(self) -> str:
        if self.concurrency is not None:
            ramp = f", started over {self.ramp:g} s" if self.ramp else ""
            return f"closed loop, {self.concurrency} concurrent streams{ramp}"
        return f"open loop, Poisson arrivals at {self.rate:g} requests/s"


@dataclass
class Progress:
    """Live counts of a run, read by a progress display while it runs."""

    planned: int
    finished: int = 0
    in_flight: int = 0
    tokens: int = 0
    errors: int = 0
    expected: Expected = field(default_factory=dict)

    def done(self, record: Record) -> None:
        self.finished += 1
        self.in_flight -= 1
        self.tokens += record.tokens
        self.errors += 0 if is_expected(record, self.expected) else 1


@dataclass
class RunResult:
    """The records of a run (in plan order) and its timing."""

    records: list[Record]
    duration: float
    """Seconds from the first request to the end of the last call."""
    lags: list[float]
    """Open loop: each request's start minus its scheduled time (empty for a closed loop)."""
    started_at: float
    """Wall-clock time of the start (Unix seconds)."""
    cpu_seconds: float
    """CPU time this process (the load generator, all its threads) used during the run."""


async def run_load(
    target: Target, requests: list[Planned], load: Load, progress: Progress
) -> RunResult:
    """Send every planned request to `target` as `load` says; returns when all calls ended."""
    origin = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - origin

    records = [Record(p.index, p.request_class, 0.0) for p in requests]

    async def one(planned: Planned, record: Record) -> None:
        progress.in_flight += 1
        await target.send(planned, record, clock)
        progress.done(record)

    started_at, cpu_at_start = time.time(), time.process_time()
    lags: list[float] = []
    work = list(zip(requests, records, strict=True))
    if load.concurrency is not None:
        await _closed(iter(work), load.concurrency, load.ramp, one)
    else:
        lags = await _open(work, load, one, clock)
    return RunResult(records, clock(), lags, started_at, time.process_time() - cpu_at_start)


Send = Callable[[Planned, Record], Awaitable[None]]


async def _closed(
    work: Iterator[tuple[Planned, Record]], concurrency: int, ramp: float, one: Send
) -> None:
    async def worker(delay: float) -> None:
        await asyncio.sleep(delay)
        for planned, record in work:  # one shared iterator: each request is taken once
            await one(planned, record)

    async with asyncio.TaskGroup() as group:
        for i in range(concurrency):
            group.create_task(worker(ramp * i / concurrency))


async def _open(
    work: list[tuple[Planned, Record]], load: Load, one: Send, clock: Callable[[], float]
) -> list[float]:
    assert load.rate is not None
    rng = random.Random(load.seed)
    slots = asyncio.Semaphore(load.max_in_flight)
    lags: list[float] = []

    async def bounded(planned: Planned, record: Record) -> None:
        try:
            await one(planned, record)
        finally:
            slots.release()

    due = 0.0
    async with asyncio.TaskGroup() as group:
        for planned, record in work:
            due += rng.expovariate(load.rate)
            await asyncio.sleep(max(0.0, due - clock()))
            await slots.acquire()
            lags.append(max(0.0, clock() - due))
            group.create_task(bounded(planned, record))
    return lags
