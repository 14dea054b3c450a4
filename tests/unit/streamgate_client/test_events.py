"""streamgate_client.events: stream messages decode into typed events (the streams and results
themselves are checked end to end in test_client.py and test_aio.py)."""

from __future__ import annotations

from streamgate_client import StreamDelta, StreamEnd, StreamStart, event_from_proto
from streamgate_client.v1 import generation_pb2 as pb


def test_unspecified_enums_read_as_empty_strings() -> None:
    start = event_from_proto(pb.GenerateStreamResponse(start=pb.Start(request_id="r")))
    end = event_from_proto(pb.GenerateStreamResponse(end=pb.End()))
    assert isinstance(start, StreamStart)
    assert (start.cache_status, start.seed) == ("", None)  # an unset seed is None, not 0
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == ""


def test_enum_values_newer_than_the_client_read_as_their_number() -> None:
    end = event_from_proto(
        pb.GenerateStreamResponse(end=pb.End(finish_reason=pb.FinishReason.ValueType(99)))
    )
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "99"


def test_known_enum_values_lose_their_prefix() -> None:
    response = pb.GenerateStreamResponse(
        start=pb.Start(cache_status=pb.CACHE_STATUS_COALESCED, seed=0)
    )
    start = event_from_proto(response)
    assert isinstance(start, StreamStart)
    assert (start.cache_status, start.seed) == ("coalesced", 0)
    end = event_from_proto(
        pb.GenerateStreamResponse(end=pb.End(finish_reason=pb.FINISH_REASON_EOS_TOKEN))
    )
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "eos_token"


def test_a_message_without_an_event_is_skipped() -> None:
    assert event_from_proto(pb.GenerateStreamResponse()) is None
    assert event_from_proto(pb.GenerateStreamResponse(delta=pb.Delta())) == StreamDelta("")
