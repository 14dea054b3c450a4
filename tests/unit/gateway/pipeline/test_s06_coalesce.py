"""Coalescing: identical cacheable calls share one backend generation (single flight); a
generation goes on for its joiners when its first caller leaves, and stops when the last one
leaves; a cached answer is replayed like a finished flight.

The first tests drive flights directly; the others go through the real pipeline over the fake
TGI (tests/support/pipelines.py), where the leader's caller pauses or leaves at chosen events
so that every interleaving is certain, not a matter of timing.
"""

from __future__ import annotations

import asyncio

import pytest

from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s06_coalesce import Flight, Flights, Follower, Origin, Produced
from streamgate_client.v1 import generation_pb2 as pb
from support.events import cached_response, token_events
from support.fake import LocalFake
from support.pipelines import NOTHING_HELD, InProcessGateway, kinds, read_until, request
from support.processes import wait_until

ORIGIN = Origin("m", "b", "p", 3, None)


async def read_all(follower: Follower) -> list[Produced]:
    out: list[Produced] = []
    try:
        async for produced in follower:
            out.append(produced)
    finally:
        await follower.aclose()
    return out


# ---- flights ---------------------------------------------------------------------------------


async def test_a_cached_answer_is_read_as_a_finished_flight_one_batch_per_step() -> None:
    hit = cached_response(3)
    produced = await read_all(Follower(Flight.cached(hit)))
    assert produced[0] == Origin("m", "b", "p", 1, None)
    assert produced[1:] == [[e] for e in hit.events]


async def test_a_follower_reads_every_event_from_the_start_then_live() -> None:
    flight, events = Flight(), token_events(3)
    flight.start(ORIGIN)
    flight.publish(events[:1])
    follower = Follower(flight)
    reading = asyncio.create_task(read_all(follower))
    await asyncio.sleep(0)
    flight.publish(events[1:])
    flight.finish()
    async with asyncio.timeout(10):
        assert await reading == [ORIGIN, *[[e] for e in events]]
    assert flight.followers == 0


async def test_a_failed_flight_fails_each_follower_with_its_own_copy_of_the_error() -> None:
    # (What each caller received goes into its copy later, in s10_respond.)
    flight, events = Flight(), token_events(3)[:2]
    flight.start(ORIGIN)
    flight.publish(events)
    error = GatewayError(Reason.BACKEND_UNAVAILABLE, "gone", tokens_sent=0)
    flight.fail(error)
    flight.fail(GatewayError(Reason.INTERNAL_ERROR, "later"))  # the first failure stays
    raised = []
    for _ in range(2):
        with pytest.raises(GatewayError) as caught:
            await read_all(Follower(flight))
        raised.append(caught.value)
    assert all(e.reason == Reason.BACKEND_UNAVAILABLE and e.tokens_sent == 0 for e in raised)
    assert len({id(e) for e in [error, *raised]}) == 3


async def test_a_flight_that_ends_before_its_origin_abandons_its_followers() -> None:
    flights = Flights()
    flight = flights.lead(b"k")
    follower = Follower(flight)
    reading = asyncio.create_task(read_all(follower))
    await asyncio.sleep(0)
    flights.land(b"k", flight)  # the leader's call ended before the backend was certain
    with pytest.raises(GatewayError) as caught:
        async with asyncio.timeout(10):
            await reading
    assert caught.value.reason == Reason.GENERATION_ABANDONED
    assert flights.get(b"k") is None


async def test_a_carried_on_generation_stops_when_its_last_follower_leaves() -> None:
    flights = Flights()
    flight = flights.lead(b"k")
    flight.start(ORIGIN)
    first, second = Follower(flight), Follower(flight)
    stopped = asyncio.Event()

    async def read_rest() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    flights.carry_on(b"k", flight, read_rest)
    flights.land(b"k", flight)  # a flight carried on lands when its reader ends
    assert flights.get(b"k") is flight
    await first.aclose()
    await first.aclose()  # leaving twice counts once
    assert flight.followers == 1 and not stopped.is_set()
    await second.aclose()
    async with asyncio.timeout(10):
        await stopped.wait()
    await wait_until(lambda: flights.get(b"k") is None, "the flight to land")
    assert flight.error is not None and flight.error.reason == Reason.GENERATION_ABANDONED


# ---- through the pipeline --------------------------------------------------------------------


async def test_identical_concurrent_calls_share_one_generation(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    n = 5
    same = request(tokens=8)
    leader_call = gw.call()
    leader = gw.pipeline.generate(same, leader_call)
    leader_events = await read_until(leader, 1)  # Start: the generation is under way
    followers = [gw.call() for _ in range(n - 1)]
    joined = [asyncio.create_task(gw.run(same, call)) for call in followers]
    flight = gw.flight(same)
    assert flight is not None
    await wait_until(lambda: flight.followers == n - 1, "every identical call to join")
    leader_events += [event async for event in leader]
    gw.finished(leader_call, same)
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*joined)

    assert fake.stats.requests == 1  # one backend generation
    assert leader_call.record.cache == pb.CACHE_STATUS_MISS
    assert [c.record.cache for c in followers] == [pb.CACHE_STATUS_COALESCED] * (n - 1)
    stats = gw.cache.stats
    assert (stats.misses, stats.coalesced, stats.hits) == (1, n - 1, 0)  # each call once
    expected = "".join(f"t{i} " for i in range(8))
    for outcome in outcomes:
        assert outcome.error is None and outcome.text == expected
        assert kinds(outcome.events) == kinds(leader_events) == ["Start"] + ["Delta"] * 8 + ["End"]
        assert outcome.start.cache_status == pb.CACHE_STATUS_COALESCED
        assert outcome.start.backend == "b0"
        assert outcome.end.completion_tokens == 8
    assert gw.held() == NOTHING_HELD
    assert gw.flight(same) is None
    assert (await gw.run(same)).start.cache_status == pb.CACHE_STATUS_HIT
    assert fake.stats.requests == 1


async def test_a_cached_answer_replays_the_same_stream_shape(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    same = request(tokens=6, response=pb.ResponseOptions(tokens=True))
    first = await gw.run(same)
    hit_call = gw.call()
    hit = await gw.run(same, hit_call)
    assert fake.stats.requests == 1
    assert first.start.cache_status == pb.CACHE_STATUS_MISS
    assert (hit.start.cache_status, hit.start.cache_tier) == (pb.CACHE_STATUS_HIT, "local")
    assert kinds(hit.events) == kinds(first.events) == ["Start"] + ["Delta"] * 6 + ["End"]
    assert [d.text for d in hit.deltas] == [d.text for d in first.deltas]
    assert [d.steps for d in hit.deltas] == [d.steps for d in first.deltas]
    assert (hit.start.model, hit.start.pool, hit.start.backend) == (
        first.start.model,
        first.start.pool,
        first.start.backend,
    )
    for field in ("finish_reason", "prompt_tokens", "completion_tokens", "seed"):
        assert getattr(hit.end, field) == getattr(first.end, field), field
    assert hit_call.record.upstream is None and hit_call.record.admission is None
    assert gw.cache.stats.hits == 1
    assert gw.held() == NOTHING_HELD


async def test_an_uncacheable_request_is_never_joined(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    sampled = request(sampling=pb.SamplingParameters(do_sample=True, temperature=0.8))
    first = gw.pipeline.generate(sampled, gw.call())
    await read_until(first, 2)
    second = await gw.run(sampled)
    await first.aclose()
    assert second.error is None and second.start.cache_status == pb.CACHE_STATUS_MISS
    assert fake.stats.requests == 2
    await wait_until(lambda: gw.held() == NOTHING_HELD, "the first call's release")


@pytest.mark.parametrize("leaves_after", [1, 2], ids=["start", "first-delta"])
async def test_the_leaders_caller_leaving_carries_the_generation_on_for_its_followers(
    gw: InProcessGateway, fake: LocalFake, leaves_after: int
) -> None:
    # After Start the backend is certain but may not have sent a token yet (opening); after
    # the first Delta it is being relayed. Either way the rest is read for the followers.
    same = request(tokens=6)
    leader_call = gw.call()
    leader = gw.pipeline.generate(same, leader_call)
    await read_until(leader, leaves_after)
    followers = [gw.call() for _ in range(2)]
    joined = [asyncio.create_task(gw.run(same, call)) for call in followers]
    flight = gw.flight(same)
    assert flight is not None
    await wait_until(lambda: flight.followers == 2, "the identical calls to join")
    await leader.aclose()
    gw.finished(leader_call, same, code=Code.CANCELLED)
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*joined)

    for outcome in outcomes:
        assert outcome.error is None and outcome.text == "t0 t1 t2 t3 t4 t5 "
        assert outcome.end.finish_reason == "length"
    assert (fake.stats.requests, fake.stats.completed, fake.stats.disconnects) == (1, 1, 0)
    await wait_until(lambda: gw.held() == NOTHING_HELD, "the generation to release")
    await wait_until(lambda: gw.flight(same) is None, "the flight to land")
    again = await gw.run(same)  # it was stored when it finished
    assert again.start.cache_status == pb.CACHE_STATUS_HIT and again.text == outcomes[0].text
    assert fake.stats.requests == 1


async def test_a_follower_that_leaves_affects_nobody(gw: InProcessGateway, fake: LocalFake) -> None:
    same = request(tokens=4)
    leader = gw.pipeline.generate(same, gw.call())
    events = await read_until(leader, 1)
    follower = gw.pipeline.generate(same, gw.call())
    await read_until(follower, 1)
    await follower.aclose()
    events += [event async for event in leader]
    assert kinds(events) == ["Start"] + ["Delta"] * 4 + ["End"]
    assert gw.held() == NOTHING_HELD
    assert (await gw.run(same)).start.cache_status == pb.CACHE_STATUS_HIT


async def test_when_every_caller_has_left_the_backend_stream_is_closed(
    gw: InProcessGateway, fake: LocalFake
) -> None:
    long = request("mode:normal delay=0.05", tokens=200)
    leader = gw.pipeline.generate(long, gw.call())
    await read_until(leader, 2)
    followers = [gw.pipeline.generate(long, gw.call()) for _ in range(2)]
    for follower in followers:
        await read_until(follower, 2)  # Start, and the Delta published so far
    await leader.aclose()  # carried on for the two followers...
    await followers[0].aclose()
    assert fake.stats.disconnects == 0
    await followers[1].aclose()  # ...until the last one leaves
    await wait_until(lambda: fake.stats.disconnects == 1, "the backend to see the stream close")
    await wait_until(lambda: gw.held() == NOTHING_HELD, "the generation to release")
    await wait_until(lambda: gw.flight(long) is None, "the flight to land")
    assert len(gw.cache.tiers.local) == 0  # never stored: it did not finish


async def test_a_failure_mid_stream_reaches_every_caller_with_its_own_tokens_sent(
    gw: InProcessGateway,
) -> None:
    failing = request("mode:error_mid_stream after=3")
    leader_call = gw.call()
    leader = gw.pipeline.generate(failing, leader_call)
    await read_until(leader, 1)
    followers = [gw.call() for _ in range(2)]
    joined = [asyncio.create_task(gw.run(failing, call)) for call in followers]
    flight = gw.flight(failing)
    assert flight is not None
    await wait_until(lambda: flight.followers == 2, "the identical calls to join")
    with pytest.raises(GatewayError) as caught:
        async for _ in leader:
            pass
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*joined)

    errors = [caught.value] + [o.error for o in outcomes]
    for error in errors:
        assert error is not None
        assert (error.code, error.reason) == (Code.INTERNAL, Reason.BACKEND_GENERATION_FAILED)
        assert error.tokens_sent == 3 and error.backend == "b0"
    assert len({id(e) for e in errors}) == 3  # each caller's own
    for outcome in outcomes:
        assert kinds(outcome.events) == ["Start", "Delta", "Delta", "Delta"]
    assert gw.held() == NOTHING_HELD
    assert gw.flight(failing) is None and len(gw.cache.tiers.local) == 0


async def test_a_failure_after_the_leader_left_reaches_followers_with_their_tokens_sent(
    gw: InProcessGateway,
) -> None:
    failing = request("mode:error_mid_stream after=3")
    leader = gw.pipeline.generate(failing, gw.call())
    await read_until(leader, 1)
    followers = [gw.call() for _ in range(2)]
    joined = [asyncio.create_task(gw.run(failing, call)) for call in followers]
    flight = gw.flight(failing)
    assert flight is not None
    await wait_until(lambda: flight.followers == 2, "the identical calls to join")
    await leader.aclose()  # it received no token: its own count is 0
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*joined)
    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.error.reason == Reason.BACKEND_GENERATION_FAILED
        assert outcome.error.tokens_sent == 3
    await wait_until(lambda: gw.held() == NOTHING_HELD, "the generation to release")
    await wait_until(lambda: gw.flight(failing) is None, "the flight to land")


async def test_a_unary_follower_of_a_failed_generation_was_sent_no_tokens(
    gw: InProcessGateway,
) -> None:
    # Generate answers at the end: its caller received nothing, whatever the flight had
    # (as a unary leader reports it: Call.tokens_sent).
    failing = request("mode:error_mid_stream after=3")
    leader = gw.pipeline.generate(failing, gw.call())
    await read_until(leader, 1)
    unary = pb.GenerateRequest()
    unary.CopyFrom(pb.GenerateRequest.FromString(failing.SerializeToString()))
    follower_call = gw.call(method="Generate")
    joined = asyncio.create_task(gw.run(unary, follower_call))
    flight = gw.flight(failing)
    assert flight is not None
    await wait_until(lambda: flight.followers == 1, "the unary call to join")
    with pytest.raises(GatewayError):
        async for _ in leader:
            pass
    async with asyncio.timeout(30):
        outcome = await joined
    assert follower_call.record.cache == pb.CACHE_STATUS_COALESCED
    assert outcome.error is not None and outcome.error.tokens_sent == 0
