from __future__ import annotations

import asyncio

import pytest
from loadtest.loadgen.mix import Mix, RequestClass
from loadtest.loadgen.plan import Planned, plan
from loadtest.loadgen.record import Record
from loadtest.loadgen.runner import Load, Progress, run_load
from loadtest.loadgen.targets import Clock

MIX = Mix(classes=[RequestClass(name="a")])


class CountingTarget:
    """Answers every call with three tokens a millisecond apart; counts calls in flight."""

    name = "counting"

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.sent: list[int] = []

    async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
        record.start = clock()
        self.sent.append(planned.index)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0.001)
            record.token(clock(), 1)
        self.in_flight -= 1
        record.finish(clock(), "OK")

    async def close(self) -> None:
        pass


async def test_a_closed_loop_keeps_exactly_its_concurrency_and_sends_each_request_once() -> None:
    target = CountingTarget()
    requests = plan(MIX, 40, seed=1)
    progress = Progress(planned=40)
    result = await run_load(target, requests, Load(concurrency=7), progress)
    assert target.peak == 7
    assert sorted(target.sent) == list(range(40))
    assert [r.index for r in result.records] == list(range(40))
    assert all(r.code == "OK" and r.tokens == 3 for r in result.records)
    assert (progress.finished, progress.in_flight, progress.tokens) == (40, 0, 120)
    assert result.lags == []


async def test_an_open_loop_starts_every_request_and_bounds_the_calls_in_flight() -> None:
    target = CountingTarget()
    requests = plan(MIX, 30, seed=1)
    result = await run_load(
        target, requests, Load(rate=2000.0, max_in_flight=4), Progress(planned=30)
    )
    assert target.peak <= 4
    assert sorted(target.sent) == list(range(30))
    assert len(result.lags) == 30 and min(result.lags) >= 0
    assert all(r.end is not None for r in result.records)


async def test_progress_counts_the_calls_their_class_does_not_expect() -> None:
    class Failing(CountingTarget):
        async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
            record.finish(clock(), "UNAVAILABLE" if planned.index % 2 else "OK")

    progress = Progress(planned=10, expected={"a": frozenset({"OK"})})
    await run_load(Failing(), plan(MIX, 10, seed=1), Load(concurrency=3), progress)
    assert (progress.finished, progress.errors) == (10, 5)


@pytest.mark.parametrize(
    "load",
    [
        {},
        {"concurrency": 4, "rate": 1.0},
        {"concurrency": 0},
        {"rate": -1.0},
        {"rate": 1.0, "ramp": 1.0},
        {"concurrency": 2, "ramp": -1.0},
    ],
)
def test_a_load_is_a_positive_concurrency_or_a_positive_rate(load: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Load(**load)  # type: ignore[arg-type]


async def test_a_ramp_spreads_the_first_calls_of_a_closed_loop_over_its_length() -> None:
    class Starts(CountingTarget):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []

        async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
            self.starts.append(clock())
            await asyncio.sleep(0.5)  # longer than the ramp: each stream makes one call
            await super().send(planned, record, clock)

    target = Starts()
    await run_load(target, plan(MIX, 4, seed=1), Load(concurrency=4, ramp=0.4), Progress(4))
    # Lower bounds only (a slow machine only delays): stream i starts no sooner than i/4 of 0.4 s.
    assert all(t >= 0.1 * i - 1e-3 for i, t in enumerate(sorted(target.starts)))
    assert sorted(target.starts)[-1] >= 0.3
