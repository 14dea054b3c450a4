"""Quotas: all-or-nothing reservations, settling, refusals and the bound, on a fake clock."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from streamgate.admission import (
    Quota,
    QuotaExceeded,
    QuotaLimits,
    QuotaRemaining,
    Reservation,
    reserve,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refusal(quotas: list[Quota], tokens: int) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as caught:
        reserve(quotas, tokens)
    return caught.value


def who(err: QuotaExceeded) -> tuple[str, str, float | None]:
    """Subject, kind and retry_after (rounded: buckets refill in floating point)."""
    return err.subject, err.kind, None if err.retry_after is None else round(err.retry_after, 6)


def left(quota: Quota) -> QuotaRemaining:
    """`remaining()`, its reset time rounded."""
    r = quota.remaining()
    reset = r.tokens_reset_seconds
    return replace(r, tokens_reset_seconds=None if reset is None else round(reset, 6))


# ---- all or nothing -----------------------------------------------------------------------------


def test_a_refusing_key_leaves_the_tenant_untouched() -> None:
    clock = Clock()
    tenant = Quota("tenant acme", QuotaLimits(60, 1000, 5), clock)
    key = Quota("key acme/ci", QuotaLimits(requests_per_minute=1), clock)
    reserve([tenant, key], 100)
    assert who(refusal([tenant, key], 100)) == ("key acme/ci", "requests", 60.0)
    assert left(tenant) == QuotaRemaining(59, 900, 4, 6.0)
    assert tenant.open_streams == 1


def test_a_refusing_tenant_leaves_the_key_untouched() -> None:
    clock = Clock()
    tenant = Quota("tenant acme", QuotaLimits(tokens_per_minute=100), clock)
    key = Quota("key acme/ci", QuotaLimits(60, 1000, 5), clock)
    reserve([tenant, key], 100)
    assert who(refusal([tenant, key], 50)) == ("tenant acme", "tokens", 30.0)
    assert left(key) == QuotaRemaining(59, 900, 4, 6.0)


def test_no_limits_no_refusals() -> None:
    quota = Quota("tenant free", QuotaLimits(), Clock())
    held = [reserve([quota], 10**9) for _ in range(100)]
    assert quota.open_streams == 100
    assert quota.remaining() == QuotaRemaining(None, None, None, None)
    for reservation in held:
        reservation.settle(10**9)
    assert quota.open_streams == 0


# ---- settling -----------------------------------------------------------------------------------


def test_settle_refunds_the_unused_tokens_and_the_stream() -> None:
    clock = Clock()
    tenant = Quota("tenant acme", QuotaLimits(tokens_per_minute=1000), clock)
    key = Quota("key acme/ci", QuotaLimits(tokens_per_minute=500), clock)
    reservation = reserve([tenant, key], 300)
    assert isinstance(reservation, Reservation) and reservation.tokens == 300
    assert (tenant.remaining().tokens, key.remaining().tokens) == (700, 200)
    assert not reservation.settled
    reservation.settle(120)
    assert reservation.settled
    assert (tenant.remaining().tokens, key.remaining().tokens) == (880, 380)
    assert (tenant.open_streams, key.open_streams) == (0, 0)


def test_settle_twice_is_a_no_op() -> None:
    quota = Quota("t", QuotaLimits(tokens_per_minute=1000, max_concurrent_streams=3), Clock())
    other = reserve([quota], 100)
    reservation = reserve([quota], 300)
    reservation.settle(100)
    reservation.settle(0)
    reservation.settle(300)
    assert quota.remaining().tokens == 800
    assert quota.open_streams == 1  # `other` still holds its stream
    other.settle(100)
    assert quota.open_streams == 0


def test_usage_above_the_reservation_is_charged() -> None:
    clock = Clock()
    quota = Quota("t", QuotaLimits(tokens_per_minute=600), clock)  # 10 a second
    reserve([quota], 500).settle(800)
    assert quota.remaining().tokens == 0  # -200 in the bucket, shown as 0
    assert quota.remaining().tokens_reset_seconds == pytest.approx(80.0)
    clock.now += 30  # -200 + 300
    assert quota.remaining().tokens == 100
    assert refusal([quota], 200).retry_after == pytest.approx(10.0)


def test_requests_are_never_refunded() -> None:
    quota = Quota("t", QuotaLimits(requests_per_minute=2), Clock())
    reserve([quota], 1).settle(0)
    reserve([quota], 1).settle(0)
    assert quota.remaining().requests == 0
    assert refusal([quota], 1).kind == "requests"


# ---- concurrency --------------------------------------------------------------------------------


def test_the_streams_limit_holds_until_settle() -> None:
    quota = Quota("tenant acme", QuotaLimits(max_concurrent_streams=2), Clock())
    first, second = reserve([quota], 1), reserve([quota], 1)
    assert quota.open_streams == 2 and quota.remaining().streams == 0
    err = refusal([quota], 1)
    assert (err.kind, err.limit, err.retry_after, err.never) == ("streams", 2, None, False)
    assert str(err) == (
        "tenant acme: concurrent streams limit 2 reached; retry when one of them ends"
    )
    first.settle(1)
    assert quota.open_streams == 1
    third = reserve([quota], 1)
    second.settle(1)
    third.settle(1)
    assert quota.open_streams == 0 and quota.remaining().streams == 2


# ---- refusals -----------------------------------------------------------------------------------


def test_a_tokens_refusal_says_what_is_left_and_when_to_retry() -> None:
    quota = Quota("tenant acme", QuotaLimits(tokens_per_minute=1000), Clock())
    reserve([quota], 580)
    err = refusal([quota], 600)
    assert (err.subject, err.kind, err.limit, err.never) == ("tenant acme", "tokens", 1000, False)
    assert err.retry_after == pytest.approx(180 * 60 / 1000)
    assert str(err) == (
        "tenant acme: tokens per minute limit 1000 reached; 420 tokens available, this "
        "request needs 600 (retry in 10.8 s)"
    )


def test_a_requests_refusal_says_when_to_retry() -> None:
    quota = Quota("key acme/ci", QuotaLimits(requests_per_minute=1), Clock())
    reserve([quota], 0)
    err = refusal([quota], 0)
    assert who(err) == ("key acme/ci", "requests", 60.0) and err.limit == 1
    assert str(err) == "key acme/ci: requests per minute limit 1 reached (retry in 60.0 s)"


def test_a_request_larger_than_the_limit_can_never_pass() -> None:
    clock = Clock()
    slow = Quota("tenant slow", QuotaLimits(requests_per_minute=1), clock)
    small = Quota("key slow/ci", QuotaLimits(tokens_per_minute=1000), clock)
    reserve([slow, small], 1)  # `slow` now refuses for 60 s
    err = refusal([slow, small], 1001)
    assert (err.subject, err.kind, err.limit) == ("key slow/ci", "tokens", 1000)
    assert err.never and err.retry_after is None
    assert str(err).startswith("key slow/ci: this request reserves 1001 tokens")
    assert small.remaining().tokens == 999  # nothing taken
    reserve([small], 999)  # the whole rest is fine


def test_the_refusal_with_the_longest_wait_is_reported() -> None:
    clock = Clock()
    requests = Quota("a", QuotaLimits(requests_per_minute=2), clock)  # 30 s per request
    tokens = Quota("b", QuotaLimits(tokens_per_minute=60), clock)  # 1 s per token
    reserve([requests, tokens], 30)
    reserve([requests, tokens], 30)
    for order in ([requests, tokens], [tokens, requests]):
        assert who(refusal(order, 40)) == ("b", "tokens", 40.0)
        assert who(refusal(order, 10)) == ("a", "requests", 30.0)


def test_the_longest_wait_wins_within_one_quota_too() -> None:
    quota = Quota("t", QuotaLimits(requests_per_minute=2, tokens_per_minute=60), Clock())
    reserve([quota], 30)
    reserve([quota], 30)
    assert who(refusal([quota], 40)) == ("t", "tokens", 40.0)  # requests: 30 s, tokens: 40 s
    assert who(refusal([quota], 10)) == ("t", "requests", 30.0)  # tokens: 10 s


def test_a_streams_refusal_is_reported_only_when_no_bucket_refuses() -> None:
    clock = Clock()
    streams = Quota("a", QuotaLimits(max_concurrent_streams=1), clock)
    tokens = Quota("b", QuotaLimits(tokens_per_minute=60), clock)
    reserve([streams, tokens], 60)
    assert refusal([streams, tokens], 1).kind == "tokens"
    clock.now += 60
    assert refusal([streams, tokens], 1).kind == "streams"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tokens_per_minute"):
        QuotaLimits(tokens_per_minute=0)
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        QuotaLimits(max_concurrent_streams=-1)
    with pytest.raises(ValueError, match="negative"):
        reserve([Quota("t", QuotaLimits(tokens_per_minute=10), Clock())], -1)


# ---- the bound ----------------------------------------------------------------------------------


async def test_racing_reservations_cannot_overshoot() -> None:
    """50 concurrent requests of 100 tokens against 1,000 a minute, at one instant."""
    quota = Quota("t", QuotaLimits(tokens_per_minute=1000), Clock())  # frozen clock

    async def call() -> Reservation | None:
        await asyncio.sleep(0)
        try:
            return reserve([quota], 100)
        except QuotaExceeded:
            return None

    results = await asyncio.gather(*(call() for _ in range(50)))
    passed = [r for r in results if r is not None]
    assert len(passed) == 10
    assert quota.remaining().tokens == 0
    for reservation in passed:
        reservation.settle(60)
    assert quota.remaining().tokens == 400  # 10 x 40 refunded
    assert quota.open_streams == 0


def test_from_idle_usage_stays_within_capacity_plus_refill() -> None:
    """Random traffic from an idle start: the tokens used by the requests admitted in [0, t]
    never exceed C + C * t / 60."""
    rng = random.Random(7)
    clock = Clock()
    start = clock.now
    capacity = 1000
    quota = Quota("t", QuotaLimits(tokens_per_minute=capacity), clock)
    held: list[tuple[Reservation, int]] = []
    used = 0  # by the requests admitted so far (each settles with `use` in the end)
    for _ in range(5000):
        clock.now += rng.uniform(0, 0.5)
        if held and rng.random() < 0.5:
            reservation, use = held.pop(rng.randrange(len(held)))
            reservation.settle(use)
        tokens = rng.randint(1, 400)
        try:
            reservation = reserve([quota], tokens)
        except QuotaExceeded:
            continue
        use = rng.randint(0, tokens)
        held.append((reservation, use))
        used += use
        assert used <= capacity * (1 + (clock.now - start) / 60) + 1e-6


def test_refunds_of_older_reservations_add_to_the_bound() -> None:
    """The extra term of the bound: tokens set aside long ago come back on a bucket that
    refilled meanwhile."""
    clock = Clock()
    quota = Quota("t", QuotaLimits(tokens_per_minute=1000), clock)
    old = reserve([quota], 1000)
    clock.now += 60  # the bucket refills while `old` holds its tokens
    used = 0
    reserve([quota], 1000).settle(1000)
    used += 1000
    old.settle(0)  # 1000 unused tokens come back
    reserve([quota], 1000).settle(1000)
    used += 1000
    assert used == 1000 + 1000  # within 0 s: C + C * 0 / 60 + the refund
