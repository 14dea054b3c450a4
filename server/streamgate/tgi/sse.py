"""Server-sent events (SSE) as TGI uses them: framing (server side) and parsing (client side).

TGI (axum) frames every stream event as `data:<compact json>\\n\\n`, with no space after
`data:`, and sends an empty `:` comment as a keep-alive after 15 s without an event (`sse_event`,
`SSE_KEEP_ALIVE`).

Proxies in front of it may add a space after `data:` or rewrite line ends to CRLF. The
incremental parser (`SSEParser`: bytes in, event payloads out) follows the SSE rules that matter
for that (WHATWG HTML, "Parsing an event stream"):

- lines end with LF, CRLF or a lone CR, wherever the chunk boundaries fall;
- a line starting with `:` is a comment (ignored); a blank line dispatches the event;
- `field:value` with one optional space after the colon; several `data` lines of one event are
  joined with LF; other fields (`event`, `id`, `retry`) carry nothing TGI uses and are ignored;
- an event whose data is empty is not dispatched; a partial event at the end is not dispatched.

It is pure (no I/O) and keeps the payloads as bytes: `json.loads` takes bytes directly, and a
multi-byte character split across chunks is whole again once its event is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from streamgate.tgi.serde import dumps

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSE_HEADERS",
    "SSE_KEEP_ALIVE",
    "SSEError",
    "SSEParser",
    "sse_event",
]

SSE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx in front must not buffer the stream
}
"""Response headers of an event stream."""

SSE_KEEP_ALIVE = b":\n\n"
"""axum's default keep-alive: an empty comment."""


def sse_event(obj: object) -> bytes:
    """One server-sent event as TGI (axum) frames it: `data:<compact json>\\n\\n`."""
    return b"data:" + dumps(obj) + b"\n\n"


# Bounds the memory one event may take. TGI's largest event is the last one, which carries the
# whole generated text (and maybe the prompt, with return_full_text): megabytes at most.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The byte stream cannot be parsed as SSE (an event or a line beyond the size limit)."""


class SSEParser:
    """Feed it the body of an event stream chunk by chunk; it returns the complete events.

    >>> p = SSEParser()
    >>> p.feed(b'data:{"a":1}\\n\\n:\\n\\ndata: {"b"')
    [b'{"a":1}']
    >>> p.feed(b":2}\\n\\n")
    [b'{"b":2}']
    """

    __slots__ = ("_data", "_max", "_partial", "_partial_size", "_started")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        # The bytes of an unfinished line, kept as pieces so that an event trickling in byte by
        # byte costs linear, not quadratic, time.
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._data: bytes | None = None  # data lines of the current event so far
        self._started = False  # a BOM may only appear at the very start

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished event are buffered (a stream cut mid-event)."""
        return bool(self._partial_size) or self._data is not None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse the next chunk; return the data of every event it completes, in order."""
        if not self._started and chunk:
            if len(chunk) + self._partial_size < len(_BOM) and _BOM.startswith(
                b"".join(self._partial) + chunk
            ):
                return self._keep(chunk)  # could still become a BOM: wait for more
            self._started = True
            buf = b"".join(self._partial) + chunk
            self._partial, self._partial_size = [], 0
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        elif b"\n" not in chunk and b"\r" not in chunk:
            return self._keep(chunk)
        elif self._partial:
            buf = b"".join(self._partial) + chunk
            self._partial, self._partial_size = [], 0
        else:
            buf = chunk

        held = b""
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across chunks.
            if buf.endswith(b"\r"):
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        rest = lines.pop() + held  # the unfinished last line ("" if buf ended with a newline)
        events = self._lines(lines)
        if rest:
            self._keep(rest)
        return events

    def _keep(self, piece: bytes) -> list[bytes]:
        self._partial.append(piece)
        self._partial_size += len(piece)
        # The unfinished line belongs to the current event: bound both together.
        if self._partial_size + (len(self._data) if self._data else 0) > self._max:
            raise SSEError(f"an SSE event is larger than {self._max} bytes")
        return []

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.startswith(b"data:"):  # TGI's every event: the fast path
                value = line[5:]
            elif not line:
                if data:  # an event with empty data is not dispatched (SSE rules)
                    events.append(data)
                data = None
                continue
            elif line.startswith(b":"):
                continue  # comment: TGI's keep-alive
            else:
                name, _, value = line.partition(b":")
                if name != b"data":
                    continue
            if value.startswith(b" "):
                value = value[1:]
            data = value if data is None else data + b"\n" + value
            if len(data) > self._max:
                raise SSEError(f"an SSE event is larger than {self._max} bytes")
        self._data = data
        return events
