"""Admission: the token budget a request reserves, quotas then an upstream slot, and nothing
held after a refusal or a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamgate.admission import AdmissionQueue
from streamgate.config import GatewayConfig
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.gateway.pipeline.s07_admit import (
    UNBOUNDED_NEW_TOKENS,
    TokenBudget,
    admit,
    quota_metadata,
    token_budget,
)
from streamgate.routing import Route
from streamgate.tenancy import Caller, Tenancy
from streamgate.tgi import GenerateParameters
from support.processes import wait_until
from support.routes import backend_info, replica, route


def prepared(inputs: str, **parameters: Any) -> PreparedRequest:
    return PreparedRequest(
        inputs=inputs,
        parameters=GenerateParameters(**parameters),
        chat=False,
        tokens=False,
        seed=None,
    )


def limited(max_input: int | None = None, max_total: int | None = None) -> Route:
    """A route whose backend reports these limits (None: it does not say)."""
    info = backend_info(max_input_tokens=max_input, max_total_tokens=max_total)
    return route("r", replica("b", info=info))


def test_the_token_budget_bounds_prompt_and_total() -> None:
    text = "héllo"  # 6 UTF-8 bytes
    assert token_budget(prepared(text, max_new_tokens=10), limited()).prompt == 8
    assert token_budget(prepared(text, max_new_tokens=10), limited()).total == 18
    assert token_budget(prepared(text, max_new_tokens=10, truncate=3), limited()).prompt == 3
    assert token_budget(prepared("x" * 100, max_new_tokens=10), limited(50, 55)).total == 55
    assert token_budget(prepared(text), limited(None, 2048)).total == 2048
    assert token_budget(prepared(text), limited()).total == 8 + UNBOUNDED_NEW_TOKENS


def caller(**limits: int) -> Caller:
    """The anonymous caller of a configuration whose default tenant has `limits`."""
    config = GatewayConfig.model_validate({"tenants": [{"name": "default", "limits": limits}]})
    return Tenancy.from_config(config).anonymous


def call_of(who: Caller, time_remaining: float | None = None) -> Call:
    call = Call.start("Generate", [], peer="", time_remaining=time_remaining)
    call.caller = who
    return call


BUDGET = TokenBudget(prompt=10, total=50)


async def test_an_admitted_request_holds_a_slot_and_its_reservation_until_finish() -> None:
    who = caller(tokens_per_minute=1000, max_concurrent_streams=2)
    queue = AdmissionQueue(max_active=1, max_queued=0, max_wait=1.0)
    admission = await admit(call_of(who), BUDGET, queue, priority=0)
    assert queue.active == 1 and who.tenant.quota.open_streams == 1
    assert admission.queue_seconds == 0.0
    admission.finish(prompt_tokens=None, received_tokens=5)  # prompt: the budget's estimate
    admission.finish(prompt_tokens=None, received_tokens=5)  # idempotent
    assert queue.active == 0 and who.tenant.quota.open_streams == 0
    remaining = who.tenant.quota.remaining().tokens
    assert remaining is not None and 1000 - 15 - 1 <= remaining <= 1000 - 15


async def test_a_request_that_received_nothing_is_charged_nothing() -> None:
    who = caller(tokens_per_minute=1000)
    admission = await admit(call_of(who), BUDGET, AdmissionQueue(1, 0, 1.0), priority=0)
    admission.finish(prompt_tokens=7, received_tokens=0)
    remaining = who.tenant.quota.remaining().tokens
    assert remaining is not None and remaining >= 999


@pytest.mark.parametrize(
    ("limits", "reason", "retry"),
    [
        ({"requests_per_minute": 1}, Reason.RATE_LIMITED, True),
        ({"max_concurrent_streams": 1}, Reason.TOO_MANY_STREAMS, True),
    ],
)
async def test_quota_refusals(limits: dict[str, int], reason: Reason, retry: bool) -> None:
    who = caller(**limits)
    queue = AdmissionQueue(max_active=4, max_queued=0, max_wait=1.0)
    first = await admit(call_of(who), BUDGET, queue, priority=0)
    with pytest.raises(GatewayError) as caught:
        await admit(call_of(who), BUDGET, queue, priority=0)
    err = caught.value
    assert (err.code, err.reason) == (Code.RESOURCE_EXHAUSTED, reason)
    assert err.quota_violations and (err.retry_after > 0) is retry
    assert queue.active == 1  # the refused request took no slot
    first.finish(None, 0)


async def test_a_request_larger_than_the_quota_can_never_pass() -> None:
    who = caller(tokens_per_minute=40)
    with pytest.raises(GatewayError) as caught:
        await admit(call_of(who), BUDGET, AdmissionQueue(1, 0, 1.0), priority=0)
    assert caught.value.reason == Reason.REQUEST_OVER_QUOTA
    assert "RetryInfo" not in {type(d).__name__ for d in caught.value.details(request_id="r")}


async def test_a_full_queue_gives_the_reservation_back() -> None:
    who = caller(max_concurrent_streams=5)
    queue = AdmissionQueue(max_active=1, max_queued=0, max_wait=1.0)
    first = await admit(call_of(who), BUDGET, queue, priority=0)
    with pytest.raises(GatewayError) as caught:
        await admit(call_of(who), BUDGET, queue, priority=0)
    assert caught.value.reason == Reason.QUEUE_FULL
    assert who.tenant.quota.open_streams == 1
    first.finish(None, 0)
    assert who.tenant.quota.open_streams == 0


async def test_the_deadline_passing_in_the_queue_is_deadline_exceeded() -> None:
    who = caller(max_concurrent_streams=5)
    queue = AdmissionQueue(max_active=1, max_queued=1, max_wait=30.0)
    first = await admit(call_of(who), BUDGET, queue, priority=0)
    with pytest.raises(GatewayError) as caught:
        await admit(call_of(who, time_remaining=0.01), BUDGET, queue, priority=0)
    assert caught.value.reason == Reason.DEADLINE_EXCEEDED
    assert (queue.queued, who.tenant.quota.open_streams) == (0, 1)
    first.finish(None, 0)


async def test_a_request_cancelled_while_queued_holds_nothing() -> None:
    who = caller(max_concurrent_streams=5)
    queue = AdmissionQueue(max_active=1, max_queued=1, max_wait=30.0)
    first = await admit(call_of(who), BUDGET, queue, priority=0)
    waiting = asyncio.create_task(admit(call_of(who), BUDGET, queue, priority=0))
    await wait_until(lambda: queue.queued == 1, "the request to queue")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (queue.queued, queue.active, who.tenant.quota.open_streams) == (0, 1, 1)
    first.finish(None, 0)
    assert (queue.active, who.tenant.quota.open_streams) == (0, 0)


def test_quota_metadata_is_the_tightest_of_the_callers_quotas() -> None:
    assert quota_metadata(caller()) == []
    who = caller(requests_per_minute=10, tokens_per_minute=100)
    meta = dict(quota_metadata(who))
    assert meta["x-ratelimit-remaining-requests"] == "10"
    assert meta["x-ratelimit-remaining-tokens"] == "100"
    assert float(meta["x-ratelimit-reset-tokens"]) == 0.0
