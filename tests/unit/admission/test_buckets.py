"""The token bucket, on a fake clock."""

from __future__ import annotations

import math

import pytest

from streamgate.admission import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_full_and_take_takes() -> None:
    bucket = TokenBucket(60, clock=Clock())
    assert bucket.capacity == 60
    assert bucket.available() == 60
    assert bucket.take(25) == 0.0
    assert bucket.available() == 35


def test_take_without_enough_takes_nothing_and_says_how_long() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # 1 unit a second
    bucket.take(50)
    assert bucket.take(30) == pytest.approx(20.0)
    assert bucket.available() == 10  # nothing taken
    clock.now += 20
    assert bucket.take(30) == 0.0
    assert bucket.available() == 0


def test_refills_continuously_up_to_the_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)  # 1000 a minute
    bucket.take(1000)
    clock.now += 6
    assert bucket.available() == pytest.approx(100.0)
    clock.now += 30
    assert bucket.available() == pytest.approx(600.0)
    clock.now += 3600
    assert bucket.available() == 1000


def test_the_period_sets_the_refill_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, period=1.0, clock=clock)  # 10 a second
    bucket.take(10)
    clock.now += 0.5
    assert bucket.available() == pytest.approx(5.0)


def test_wait_time_is_exact_and_takes_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)
    bucket.take(900)  # 100 left, 1000/60 a second
    assert bucket.wait_time(100) == 0.0
    assert bucket.wait_time(300) == pytest.approx(200 * 60 / 1000)
    assert bucket.wait_time(300) == bucket.take(300)
    assert bucket.available() == 100
    clock.now += 12
    assert bucket.wait_time(300) == pytest.approx(0.0, abs=1e-9)


def test_more_than_the_capacity_never_fits() -> None:
    bucket = TokenBucket(10, clock=Clock())
    assert bucket.wait_time(11) == math.inf
    assert bucket.take(11) == math.inf
    assert bucket.available() == 10
    assert bucket.take(10) == 0.0  # exactly the capacity fits


def test_give_is_capped_at_the_capacity() -> None:
    bucket = TokenBucket(60, clock=Clock())
    bucket.take(30)
    bucket.give(10)
    assert bucket.available() == 40
    bucket.give(100)
    assert bucket.available() == 60


def test_charge_may_go_negative_and_refills_from_there() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    bucket.charge(90)
    assert bucket.available() == -30
    assert bucket.wait_time(1) == pytest.approx(31.0)
    assert bucket.take(1) == pytest.approx(31.0)
    assert bucket.seconds_to_full() == pytest.approx(90.0)
    clock.now += 30
    assert bucket.available() == pytest.approx(0.0)
    clock.now += 60
    assert bucket.available() == 60
    assert bucket.seconds_to_full() == 0.0


@pytest.mark.parametrize(("capacity", "period"), [(0, 60.0), (-1, 60.0), (10, 0.0)])
def test_capacity_and_period_must_be_positive(capacity: float, period: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(capacity, period)
