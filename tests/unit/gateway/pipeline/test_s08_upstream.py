"""The upstream stage through the real pipeline over two fake TGIs: a retryable failure before
the first token is tried again on another replica, other failures are not, and a failed call
holds nothing afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from streamgate.gateway.pipeline.errors import Code, Reason
from support.fake import LocalFake, serve_fake
from support.fake_tgi import Behaviour
from support.pipelines import (
    NOTHING_HELD,
    InProcessGateway,
    kinds,
    pipeline_config,
    request,
    start_pipeline,
)


@asynccontextmanager
async def two_backends(
    first: Behaviour, second: Behaviour, **sections: Any
) -> AsyncIterator[tuple[InProcessGateway, LocalFake, LocalFake]]:
    """A pipeline whose pool has b0 (`first`) and b1 (`second`); b1 looks busier, so the
    least-load picker always tries b0 first."""
    async with (
        serve_fake(first) as b0,
        serve_fake(second) as b1,
        start_pipeline(pipeline_config(b0.url, b1.url, **sections)) as gw,
    ):
        # Another client's request on b1 (the fake has no /metrics: scraping leaves it).
        gw.replica("b1").gauges.queue_size = 1
        yield gw, b0, b1


@pytest.mark.parametrize(
    "failing",
    [Behaviour(mode="overloaded"), Behaviour(mode="http_error", status=503)],
    ids=["overloaded", "unavailable"],
)
async def test_a_retryable_failure_is_tried_again_on_another_replica(
    failing: Behaviour, per_step: None
) -> None:
    async with two_backends(failing, Behaviour()) as (gw, bad, good):
        call = gw.call()
        outcome = await gw.run(request(tokens=4), call)
        assert outcome.error is None and outcome.text == "t0 t1 t2 t3 "
        assert kinds(outcome.events) == ["Start"] + ["Delta"] * 4 + ["End"]
        assert outcome.start.backend == "b1"  # Start waits until the backend is certain
        assert call.record.upstream is not None and call.record.upstream.attempts == 2
        assert (bad.stats.requests, good.stats.requests) == (1, 1)
        assert gw.held() == NOTHING_HELD


async def test_a_non_retryable_failure_is_not_retried(per_step: None) -> None:
    async with two_backends(Behaviour(mode="validation"), Behaviour()) as (gw, bad, good):
        failing = request()
        call = gw.call()
        outcome = await gw.run(failing, call)
        error = outcome.error
        assert error is not None
        assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, Reason.BACKEND_VALIDATION)
        assert outcome.events == []  # the backend never became certain: no Start
        assert (bad.stats.requests, good.stats.requests) == (1, 0)
        assert call.record.upstream is None
        assert gw.held() == NOTHING_HELD
        assert gw.flight(failing) is None


async def test_when_every_replica_is_overloaded_the_call_is_resource_exhausted(
    per_step: None,
) -> None:
    overloaded = Behaviour(mode="overloaded")
    async with two_backends(overloaded, overloaded) as (gw, b0, b1):
        failing = request()
        outcome = await gw.run(failing)
        error = outcome.error
        assert error is not None
        assert (error.code, error.reason) == (Code.RESOURCE_EXHAUSTED, Reason.BACKEND_OVERLOADED)
        assert error.retry_after > 0 and error.tokens_sent == 0
        # The second replica was the last to try: certain once sent, so Start went out.
        assert kinds(outcome.events) == ["Start"]
        assert (b0.stats.requests, b1.stats.requests) == (1, 1)
        assert gw.held() == NOTHING_HELD
        assert gw.flight(failing) is None
        assert len(gw.cache.tiers.local) == 0


async def test_no_other_replica_is_tried_past_max_attempts(per_step: None) -> None:
    limits = {"max_attempts": 1}
    async with two_backends(Behaviour(mode="overloaded"), Behaviour(), limits=limits) as (
        gw,
        bad,
        good,
    ):
        outcome = await gw.run(request())
        assert outcome.error is not None and outcome.error.reason == Reason.BACKEND_OVERLOADED
        assert (bad.stats.requests, good.stats.requests) == (1, 0)
        assert gw.held() == NOTHING_HELD
