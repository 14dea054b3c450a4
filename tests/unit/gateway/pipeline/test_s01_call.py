"""The call: its request id (the caller's when valid), metadata labels, deadline, caller and
interruption."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s10_respond import Delivery
from streamgate_client.v1 import generation_pb2 as pb


def start(*metadata: tuple[str, str | bytes], time_remaining: float | None = None) -> Call:
    return Call.start(
        "GenerateStream", metadata, peer="ipv4:1.2.3.4:5", time_remaining=time_remaining
    )


def test_a_valid_request_id_is_kept() -> None:
    for rid in ("r1", "a.b_c:d/e+f=g-h", "x" * 128):
        assert start(("x-request-id", rid)).request_id == rid


@pytest.mark.parametrize("rid", ["", "has space", "x" * 129, "naïve", "new\nline"])
def test_an_invalid_or_missing_request_id_is_replaced(rid: str) -> None:
    call = start(("x-request-id", rid))
    assert call.request_id != rid
    assert len(call.request_id) == 32 and int(call.request_id, 16) >= 0
    assert start().request_id != start().request_id


def test_metadata_keys_in_any_case_and_the_first_value_wins() -> None:
    call = start(("X-Request-Id", "one"), ("x-request-id", "two"), ("X-Route", "tiny"))
    assert (call.request_id, call.route_hint) == ("one", "tiny")


def test_other_x_metadata_are_labels_and_binary_values_are_not() -> None:
    call = start(
        ("x-route", "tiny"),
        ("x-priority", "3"),
        ("x-user-id", "u7"),
        ("X-Team", "search"),
        ("x-trace-bin", b"\x00\x01"),
        ("authorization", "Bearer secret"),
        ("user-agent", "grpc-python"),
    )
    assert (call.route_hint, call.priority_hint) == ("tiny", "3")
    assert call.labels == {"x-user-id": "u7", "x-team": "search"}
    assert (call.method, call.peer) == ("GenerateStream", "ipv4:1.2.3.4:5")


def test_the_deadline_is_the_time_remaining_from_the_start() -> None:
    assert start().deadline is None and start().remaining() is None
    assert not start().deadline_passed()
    before = time.monotonic()
    call = start(time_remaining=30.0)
    assert call.deadline is not None and before + 30.0 <= call.deadline <= time.monotonic() + 30
    remaining = call.remaining()
    assert remaining is not None and 0 < remaining <= 30.0
    assert not call.deadline_passed()
    assert start(time_remaining=0.0).deadline_passed()
    assert call.elapsed() >= 0


def test_a_new_call_has_an_empty_record_and_no_caller() -> None:
    call = start()
    assert call.record.cache == pb.CACHE_STATUS_UNSPECIFIED
    assert call.record.route is None and call.record.upstream is None
    with pytest.raises(GatewayError) as caught:
        _ = call.authenticated
    assert caught.value.code == Code.INTERNAL


async def test_interrupt_cancels_the_calls_task_once_with_its_error() -> None:
    call = start()
    call.task = asyncio.create_task(asyncio.sleep(60))
    first = GatewayError(Reason.DRAINING, "shutting down")
    call.interrupt(first)
    call.interrupt(GatewayError(Reason.CLIENT_TOO_SLOW, "later"))
    with pytest.raises(asyncio.CancelledError):
        await call.task
    assert call.interruption is first


async def test_a_call_sending_its_status_is_not_interrupted() -> None:
    call = start()
    call.task = asyncio.create_task(asyncio.sleep(0))
    call.finishing = True
    call.interrupt(GatewayError(Reason.DRAINING, "shutting down"))
    await call.task
    assert call.interruption is None


def test_only_a_stream_has_sent_the_tokens_it_delivered() -> None:
    stream = Call.start("GenerateStream", [], peer="", time_remaining=None, streaming=True)
    assert stream.tokens_sent() == 0
    stream.record.delivery = Delivery(tokens=4)
    assert stream.tokens_sent() == 4
    unary = Call.start("Generate", [], peer="", time_remaining=None)
    unary.record.delivery = Delivery(tokens=4)  # collected into one answer, sent at the end
    assert unary.tokens_sent() == 0
