"""SSE: TGI's framing, and the parser over framing variants, chunk boundaries and bad input."""

from __future__ import annotations

import json

import pytest

from streamgate.tgi import SSE_KEEP_ALIVE, SSEError, SSEParser, sse_event


def _token(i: int, **extra: object) -> dict[str, object]:
    return {
        "index": i + 1,
        "token": {"id": i, "text": f"t{i} ", "logprob": -0.25, "special": False},
        "top_tokens": [],
        "generated_text": None,
        "details": None,
        **extra,
    }


LAST = _token(
    2,
    generated_text="t0 t1 t2 ",
    details={"finish_reason": "length", "generated_tokens": 3, "seed": 7, "input_length": 4},
)
EVENTS = [_token(0), _token(1), LAST]
PAYLOADS = [json.dumps(e, separators=(",", ":")).encode() for e in EVENTS]
# TGI's own framing: no space after `data:`, LF line ends, a keep-alive comment between events.
TGI_STREAM = b"data:" + PAYLOADS[0] + b"\n\n:\n\ndata:" + PAYLOADS[1] + b"\n\ndata:"
TGI_STREAM += PAYLOADS[2] + b"\n\n"


def feed_all(parser: SSEParser, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def byte_by_byte(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def test_one_chunk_many_events() -> None:
    parser = SSEParser()
    assert parser.feed(TGI_STREAM) == PAYLOADS
    assert not parser.pending


def test_byte_by_byte() -> None:
    parser = SSEParser()
    assert feed_all(parser, byte_by_byte(TGI_STREAM)) == PAYLOADS
    assert not parser.pending


def test_every_split_point() -> None:
    # Two chunks, split at every byte offset: the same events every time.
    for cut in range(len(TGI_STREAM) + 1):
        parser = SSEParser()
        assert feed_all(parser, [TGI_STREAM[:cut], TGI_STREAM[cut:]]) == PAYLOADS, cut


def test_event_is_dispatched_by_the_blank_line_only() -> None:
    parser = SSEParser()
    assert parser.feed(b"data:" + PAYLOADS[0] + b"\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [PAYLOADS[0]]
    assert not parser.pending


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("space", [b"", b" "])
def test_line_ends_and_optional_space(sep: bytes, space: bytes) -> None:
    raw = b"".join(b"data:" + space + p + sep + b":" + sep + sep for p in PAYLOADS)
    for chunks in ([raw], byte_by_byte(raw)):
        parser = SSEParser()
        out = feed_all(parser, chunks)
        if sep == b"\r":
            # A lone CR at the end of the input may still be the first half of a CRLF: the
            # last event is dispatched when the next byte shows which.
            assert out == PAYLOADS[:-1]
            out += parser.feed(b"\n")
        assert out == PAYLOADS


def test_crlf_split_between_cr_and_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data:" + PAYLOADS[0] + b"\r\n\r") == []
    assert parser.feed(b"\ndata:" + PAYLOADS[1] + b"\r\n\r\n") == PAYLOADS[:2]


def test_only_one_space_is_stripped() -> None:
    assert SSEParser().feed(b"data:  x\n\n") == [b" x"]


def test_comments_and_keep_alives_are_ignored() -> None:
    parser = SSEParser()
    assert parser.feed(b":\n\n: keep-alive\n\n:\n\n") == []
    assert not parser.pending
    assert parser.feed(b": a comment inside\ndata:x\n: another\n\n") == [b"x"]


def test_other_fields_are_ignored() -> None:
    raw = b"event: message\nid: 5\nretry: 100\ndata:x\n\nevent: only\n\n"
    assert SSEParser().feed(raw) == [b"x"]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert SSEParser().feed(b"data:a\ndata: b\ndata\n\n") == [b"a\nb\n"]


def test_empty_data_is_not_dispatched() -> None:
    assert SSEParser().feed(b"data:\n\ndata\n\n\n\n") == []


def test_bom_at_the_start_is_skipped() -> None:
    raw = b"\xef\xbb\xbfdata:x\n\n"
    assert SSEParser().feed(raw) == [b"x"]
    assert feed_all(SSEParser(), byte_by_byte(raw)) == [b"x"]
    # Only at the very start.
    assert SSEParser().feed(b"data:x\n\n\xef\xbb\xbfdata:y\n\n") == [b"x"]


def test_multi_byte_character_split_across_chunks() -> None:
    raw = 'data:{"text":"h\u00e9llo \U0001f600"}\n\n'.encode()
    out = feed_all(SSEParser(), byte_by_byte(raw))
    assert [json.loads(p) for p in out] == [{"text": "h\u00e9llo \U0001f600"}]


def test_partial_event_at_the_end_is_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data:" + PAYLOADS[0][:10]) == []
    assert parser.pending


def test_size_limit() -> None:
    parser = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEError):
        feed_all(parser, [b"data:" + b"x" * 40, b"y" * 40])
    with pytest.raises(SSEError):
        SSEParser(max_event_bytes=64).feed(b"data:" + b"x" * 100 + b"\n\n")
    with pytest.raises(SSEError):
        SSEParser(max_event_bytes=64).feed(b"data:" + b"x" * 40 + b"\ndata:" + b"x" * 40)


def test_framing_is_tgis_and_parses_back() -> None:
    event = {"index": 1, "token": {"id": 5, "text": "h\u00e9", "logprob": None, "special": False}}
    framed = sse_event(event)
    # No space after `data:`, compact JSON with UTF-8 unescaped, a blank line after the event.
    expected = 'data:{"index":1,"token":{"id":5,"text":"h\u00e9","logprob":null,"special":false}}'
    assert framed == expected.encode() + b"\n\n"
    parser = SSEParser()
    assert [json.loads(p) for p in parser.feed(framed + SSE_KEEP_ALIVE + framed)] == [event] * 2
    assert not parser.pending


def test_framing_refuses_nan() -> None:
    # TGI's JSON has no NaN: a float that is not finite must be mapped before (to null).
    with pytest.raises(ValueError):
        sse_event({"logprob": float("nan")})
