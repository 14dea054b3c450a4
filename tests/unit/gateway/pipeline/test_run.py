"""The whole pipeline in process, over the fake TGI (tests/support/pipelines.py): a stream's
shape, a unary call, callers that leave, and failures that leave nothing held.

Coalescing and replay are in test_s06_coalesce.py, the upstream retry in test_s08_upstream.py.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s10_respond import collect
from streamgate_client.v1 import generation_pb2 as pb
from support.fake import LocalFake
from support.pipelines import NOTHING_HELD, InProcessGateway, kinds, read_until, request
from support.processes import wait_until


async def test_a_stream_is_start_one_delta_per_backend_step_then_end(
    gw: InProcessGateway,
) -> None:
    call = gw.call(("x-request-id", "req-1"))
    outcome = await gw.run(request(tokens=5), call)
    assert outcome.error is None
    assert kinds(outcome.events) == ["Start"] + ["Delta"] * 5 + ["End"]
    start = outcome.start
    assert (start.request_id, start.route, start.pool, start.backend, start.model) == (
        "req-1",
        "fake",
        "fake",
        "b0",
        "fake/tgi",
    )
    assert start.cache_status == pb.CACHE_STATUS_MISS and start.cache_tier == ""
    assert [d.text for d in outcome.deltas] == ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]
    assert all(d.steps == () for d in outcome.deltas)  # tokens were not asked for
    end = outcome.end
    assert (end.finish_reason, end.completion_tokens, end.prompt_tokens) == ("length", 5, 2)
    assert 0 <= end.time_to_first_token_seconds <= end.total_seconds
    assert call.record.upstream is not None and call.record.upstream.attempts == 1
    assert call.record.end is end
    assert gw.held() == NOTHING_HELD


async def test_deltas_carry_the_backends_tokens_when_asked(gw: InProcessGateway) -> None:
    asked = request(tokens=3, response=pb.ResponseOptions(top_n_tokens=2))
    outcome = await gw.run(asked)
    assert [len(d.steps) for d in outcome.deltas] == [1, 1, 1]
    first = outcome.deltas[0].steps[0]
    assert (first.token.id, first.token.text) == (0, "t0 ")
    assert [t.text for t in first.top_tokens] == ["t0 ", "t1 "]
    assert outcome.deltas[-1].steps[0].details is not None


async def test_a_unary_call_collects_the_same_events(gw: InProcessGateway) -> None:
    unary = pb.GenerateRequest(prompt="hello world", stopping=pb.StoppingCriteria(max_new_tokens=3))
    answer = await collect(gw.pipeline.generate(unary, gw.call(method="Generate")))
    assert answer.text == "t0 t1 t2 "
    assert (answer.end.finish_reason, answer.end.completion_tokens) == ("length", 3)
    # Start says what the backend reported at the end.
    assert answer.start.input_tokens == answer.end.prompt_tokens == 2
    assert gw.held() == NOTHING_HELD


async def test_a_running_call_holds_a_slot_a_stream_and_a_lease(gw: InProcessGateway) -> None:
    events = gw.pipeline.generate(request("mode:normal delay=0.05", tokens=200), gw.call())
    await read_until(events, 2)  # Start and the first Delta
    assert gw.held() == {"slots": 1, "queued": 0, "streams": 1, "leases": 1}
    await events.aclose()
    assert gw.held() == NOTHING_HELD


async def test_a_caller_that_leaves_alone_closes_the_backend_stream(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    leaving = request("mode:normal delay=0.05", tokens=200)
    events = gw.pipeline.generate(leaving, gw.call())
    await read_until(events, 2)
    await events.aclose()
    await wait_until(lambda: fake.stats.disconnects == 1, "the backend to see the client leave")
    assert gw.held() == NOTHING_HELD
    assert gw.flight(leaving) is None
    assert len(gw.cache.tiers.local) == 0  # a stream cut short is never stored


async def test_a_cancelled_call_closes_the_backend_request_at_once(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    waiting = request("mode:hang")
    started = asyncio.Event()

    async def run() -> None:
        events = gw.pipeline.generate(waiting, gw.call())
        async with contextlib.aclosing(events):
            async for _ in events:  # Start: the only replica was sent the request
                started.set()

    task = asyncio.create_task(run())
    async with asyncio.timeout(30):
        await started.wait()
    await wait_until(lambda: fake.stats.requests == 1, "the request to reach the backend")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: fake.stats.disconnects == 1, "the backend to see the client leave")
    assert gw.held() == NOTHING_HELD
    assert gw.flight(waiting) is None


async def test_a_bad_request_fails_before_anything_is_held(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    outcome = await gw.run(request("", tokens=0))
    assert outcome.error is not None and outcome.error.code == Code.INVALID_ARGUMENT
    assert outcome.events == []
    assert fake.stats.requests == 0 and gw.held() == NOTHING_HELD


async def test_only_if_cached_without_an_answer_is_not_found(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    cached_only = request(cache=pb.CacheControl(mode=pb.CACHE_MODE_ONLY_IF_CACHED))
    outcome = await gw.run(cached_only)
    assert outcome.error is not None and outcome.error.reason == Reason.NOT_CACHED
    assert fake.stats.requests == 0 and gw.held() == NOTHING_HELD
    await gw.run(request())
    again = await gw.run(cached_only)
    assert again.error is None and again.start.cache_status == pb.CACHE_STATUS_HIT


@pytest.mark.parametrize(
    ("prompt", "reason", "tokens_sent"),
    [
        ("mode:error_mid_stream after=0", Reason.BACKEND_GENERATION_FAILED, 0),
        ("mode:error_mid_stream after=3", Reason.BACKEND_GENERATION_FAILED, 3),
        ("mode:drop after=2", Reason.BACKEND_UNAVAILABLE, 2),
        ("mode:malformed after=1", Reason.BACKEND_PROTOCOL_ERROR, 1),
    ],
)
async def test_a_backend_failure_leaves_nothing_held(
    gw: InProcessGateway, prompt: str, reason: Reason, tokens_sent: int
) -> None:
    failing = request(prompt)
    outcome = await gw.run(failing)
    error = outcome.error
    assert error is not None and error.reason == reason
    assert error.tokens_sent == tokens_sent and error.backend == "b0"
    # The only replica is certain once sent: Start went out, then what arrived.
    assert kinds(outcome.events) == ["Start"] + ["Delta"] * tokens_sent
    assert gw.held() == NOTHING_HELD
    assert gw.flight(failing) is None
    assert len(gw.cache.tiers.local) == 0  # a failed stream is never stored


async def test_the_deadline_ends_a_call_waiting_for_the_backend(gw: InProcessGateway) -> None:
    call = gw.call(time_remaining=0.2)
    outcome = await gw.run(request("mode:slow_first first_delay=30"), call)
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.reason) == (
        Code.DEADLINE_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
    )
    assert gw.held() == NOTHING_HELD


async def test_a_failure_is_a_gateway_error_whatever_the_stage(gw: InProcessGateway) -> None:
    unknown = await gw.run(request(model="ghost"))
    assert isinstance(unknown.error, GatewayError)
    assert unknown.error.reason == Reason.ROUTE_NOT_FOUND
