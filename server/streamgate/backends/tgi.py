"""The TGI backend adapter: TGI's HTTP API over one pooled aiohttp session per backend.

The gateway uses this for every backend, a real TGI fleet or `streamgate engine` alike. What it
relies on (TGI v3.3, router/src/server.rs):

- `POST /generate_stream` answers HTTP 200 and then `data:<json>` events, one per token; the last
  token's event carries `generated_text` and (with `details: true`) `details`. Errors inside the
  stream are a last `data:{"error", "error_type"}` event. `:` comments are keep-alives.
- A non-200 answer comes from something in front of TGI (a proxy) or an older TGI; its body is
  read as TGI's `{"error", "error_type"}` JSON when it is one.
- Closing the connection of a stream makes TGI drop the sequence at its next step, so an early
  close here closes the connection itself, never hands it back to the pool half-read.

Every failure is one exception type, `BackendError`, whose `kind` says how the gateway should
answer and whose `retryable` says whether another replica may be tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp

from streamgate.backends.sse import DEFAULT_MAX_EVENT_BYTES, SSEError, SSEParser

__all__ = [
    "BackendError",
    "BackendErrorKind",
    "BackendInfo",
    "StreamDetails",
    "StreamError",
    "StreamEvent",
    "TGIBackend",
    "TGIParameters",
    "TGIStream",
    "Token",
    "parse_stream_event",
]

BackendErrorKind = Literal[
    "overloaded", "validation", "generation", "unavailable", "protocol", "timeout"
]

# Kinds where a failure before the first token says nothing about the request itself: another
# replica may well serve it. (A validation or generation error would most likely repeat; a
# timeout has spent the caller's time budget.)
_RETRYABLE_KINDS: Final = frozenset({"overloaded", "unavailable"})

# TGI's `InferError::error_type()` values (router/src/infer/mod.rs) and what they mean here.
_KIND_BY_ERROR_TYPE: Final[Mapping[str, BackendErrorKind]] = {
    "overloaded": "overloaded",
    "validation": "validation",
    "template_error": "validation",
    "missing_template_variable": "validation",
    "tool_error": "validation",
    "generation": "generation",
    "incomplete_generation": "generation",
    "incomplete_generation_stream": "generation",
    "stream_serialization_error": "generation",
}

# An error body is a short JSON object; anything longer is not worth reading.
_MAX_ERROR_BODY = 64 * 1024
# After the last event (or an error event) TGI ends the response at once; reading up to that end
# lets the connection go back to the pool. A server that does not end it loses the connection.
_DRAIN_TIMEOUT = 1.0


class BackendError(Exception):
    """A backend call failed.

    Attributes:
        kind: `overloaded` (TGI `overloaded`, HTTP 429), `validation` (TGI `validation`, 400,
            422), `generation` (TGI `generation`/`incomplete_generation`, 424), `unavailable`
            (cannot connect, connection lost, 5xx, the stream ended without its last event),
            `protocol` (the backend sent something that is not TGI's protocol) or `timeout`
            (the request's deadline or the idle timeout between events passed).
        tokens_received: token events handed to the caller before the failure.
        backend: the backend's name (its URL unless named).
        retryable: nothing was generated for the caller yet and another replica may succeed.
        status: the HTTP status when the error came with a non-200 answer.
        error_type: TGI's `error_type` when the backend sent one.
    """

    def __init__(
        self,
        kind: BackendErrorKind,
        message: str,
        *,
        tokens_received: int,
        backend: str,
        retryable: bool,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: BackendErrorKind = kind
        self.message = message
        self.tokens_received = tokens_received
        self.backend = backend
        self.retryable = retryable
        self.status = status
        self.error_type = error_type

    def __str__(self) -> str:
        return f"{self.kind} from {self.backend}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"BackendError({self.kind!r}, {self.message!r}, tokens_received="
            f"{self.tokens_received}, backend={self.backend!r}, retryable={self.retryable})"
        )


# ---- request and response types ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TGIParameters:
    """TGI's `GenerateParameters`; `None` means "not sent": the backend's default applies.

    `details` is always sent as true by the adapter (the last event must carry the finish reason
    and token counts), whatever is set here.
    """

    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    max_new_tokens: int | None = None
    stop: Sequence[str] | None = None
    truncate: int | None = None
    details: bool | None = None
    decoder_input_details: bool | None = None
    top_n_tokens: int | None = None
    return_full_text: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON `parameters` object: only the fields that are set."""
        out: dict[str, Any] = {}
        for name in _PARAMETER_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if name == "stop" else value
        return out


_PARAMETER_NAMES: Final = tuple(f.name for f in dataclasses.fields(TGIParameters))


@dataclass(frozen=True, slots=True)
class Token:
    """One token: TGI's `Token`. `text` may be empty while a multi-byte character is split."""

    id: int
    text: str
    logprob: float | None
    special: bool


@dataclass(frozen=True, slots=True)
class StreamDetails:
    """TGI's `StreamDetails`, carried by the last event of a stream."""

    finish_reason: str  # "length" | "eos_token" | "stop_sequence"
    generated_tokens: int
    input_length: int | None
    seed: int | None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One `data:` event of a stream: one generated token (TGI's `StreamResponse`).

    The last event has `generated_text` set and, because the adapter asks for details,
    `details` too; `final` tells it apart.
    """

    index: int
    token: Token
    top_tokens: tuple[Token, ...] = ()
    generated_text: str | None = None
    details: StreamDetails | None = None

    @property
    def final(self) -> bool:
        """True for the last event of a stream."""
        return self.generated_text is not None or self.details is not None


@dataclass(frozen=True, slots=True)
class StreamError:
    """An in-stream error event: `{"error": ..., "error_type": ...}`."""

    message: str
    error_type: str | None


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What `GET /info` says about a backend; `raw` is the whole answer."""

    model_id: str
    model_sha: str | None
    max_input_tokens: int | None
    max_total_tokens: int | None
    max_concurrent_requests: int | None
    max_best_of: int | None
    max_stop_sequences: int | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BackendInfo:
        """Read TGI's `Info`; optional fields may be missing, unknown fields are kept in `raw`.

        Raises `ValueError` if `model_id` is missing.
        """
        model_id = raw.get("model_id")
        if not isinstance(model_id, str):
            raise ValueError("/info has no model_id")
        sha = raw.get("model_sha")
        return cls(
            model_id=model_id,
            model_sha=sha if isinstance(sha, str) else None,
            # TGI before 2.0 called it max_input_length.
            max_input_tokens=_int_field(raw, "max_input_tokens", "max_input_length"),
            max_total_tokens=_int_field(raw, "max_total_tokens"),
            max_concurrent_requests=_int_field(raw, "max_concurrent_requests"),
            max_best_of=_int_field(raw, "max_best_of"),
            max_stop_sequences=_int_field(raw, "max_stop_sequences"),
            raw=raw,
        )


def _int_field(raw: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# ---- event decoding --------------------------------------------------------------------------


def parse_stream_event(payload: bytes | str) -> StreamEvent | StreamError:
    """Decode the data of one SSE event of a TGI stream.

    Raises `ValueError` for malformed JSON or an event that is neither a token nor an error.
    """
    try:
        obj = json.loads(payload)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise ValueError(f"malformed JSON in a data line: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"an event that is not a JSON object: {_excerpt(payload)}")
    token = obj.get("token")
    if token is None:
        if "error" in obj:
            error_type = obj.get("error_type")
            if not isinstance(error_type, str):
                error_type = None
            return StreamError(str(obj["error"]), error_type)
        raise ValueError(f"an event with neither token nor error: {_excerpt(payload)}")
    try:
        top = obj.get("top_tokens") or ()
        details = obj.get("details")
        generated_text = obj.get("generated_text")
        if generated_text is not None and not isinstance(generated_text, str):
            raise TypeError("generated_text is not a string")
        return StreamEvent(
            index=int(obj.get("index", 0)),
            token=_token(token),
            top_tokens=tuple(_token(t) for t in top),
            generated_text=generated_text,
            details=None if details is None else _details(details),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"malformed token event ({err!r}): {_excerpt(payload)}") from None


def _token(obj: Mapping[str, Any]) -> Token:
    text = obj["text"]
    if not isinstance(text, str):
        raise TypeError("token text is not a string")
    logprob = obj.get("logprob")
    return Token(
        id=int(obj["id"]),
        text=text,
        logprob=None if logprob is None else float(logprob),
        special=bool(obj.get("special", False)),
    )


def _details(obj: Mapping[str, Any]) -> StreamDetails:
    input_length = obj.get("input_length")
    seed = obj.get("seed")
    return StreamDetails(
        finish_reason=str(obj["finish_reason"]),
        generated_tokens=int(obj["generated_tokens"]),
        input_length=None if input_length is None else int(input_length),
        seed=None if seed is None else int(seed),
    )


def _excerpt(payload: bytes | str, limit: int = 200) -> str:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text if len(text) <= limit else text[:limit] + "..."


def _error_from_body(status: int, raw: bytes) -> tuple[BackendErrorKind, str, str | None]:
    """Kind, message and error_type of a non-200 answer: TGI's JSON if it is one."""
    message = ""
    error_type: str | None = None
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        message = str(obj["error"])
        if isinstance(obj.get("error_type"), str):
            error_type = obj["error_type"]
    else:
        message = _excerpt(raw) or "(empty body)"
    kind = _KIND_BY_ERROR_TYPE.get(error_type or "")
    if kind is None:
        if status == 429:
            kind = "overloaded"
        elif status in (400, 413, 422):
            kind = "validation"
        elif status == 424:
            kind = "generation"
        else:  # 5xx, and 4xx a proxy or a misconfigured URL gives (401, 403, 404, ...)
            kind = "unavailable"
    return kind, f"HTTP {status}: {message}", error_type


# ---- the adapter -----------------------------------------------------------------------------


class TGIBackend:
    """One TGI backend (a replica): a pooled HTTP session and TGI's routes over it.

    Call `await start()` before use and `await close()` at the end (or use `async with`). The
    connection limit bounds the streams in flight to this backend (HTTP/1.1: one connection per
    stream); a request beyond it waits for a free connection within its own deadline.

    Args:
        url: base URL, e.g. `http://10.0.0.5:8080` (a path prefix is kept).
        name: how errors and logs name this backend (default: the URL).
        max_connections: connection pool size.
        connect_timeout: bound on establishing one TCP connection.
        idle_timeout: bound on the silence between two reads of a stream (also before the
            response headers); any bytes, keep-alive comments included, reset it. TGI sends
            keep-alives every 15 s, so keep this well above that for real TGI. None = no bound.
        request_timeout: bound on the non-streaming calls (`info`, `tokenize`).
        health_timeout: bound on `health`.
        keepalive_timeout: how long an idle pooled connection is kept open.
        max_event_bytes: the largest SSE event accepted.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        idle_timeout: float | None = 60.0,
        request_timeout: float = 30.0,
        health_timeout: float = 2.0,
        keepalive_timeout: float = 30.0,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout or None  # aiohttp reads 0 as "no bound" too
        self.request_timeout = request_timeout
        self.health_timeout = health_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_event_bytes = max_event_bytes
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the pooled session (idempotent); must run on the loop that will use it."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.keepalive_timeout,
            # aiohttp rounds timeouts of 5 s and more up to whole seconds (to share timers);
            # a request's deadline must fire when it is due, not up to a second later.
            timeout_ceil_threshold=math.inf,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
        )

    async def close(self) -> None:
        """Close the session and every pooled connection (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session (raises RuntimeError before `start()`)."""
        if self._session is None:
            raise RuntimeError(f"backend {self.name} is not started")
        return self._session

    # ---- simple routes ---------------------------------------------------------------------

    async def health(self) -> bool:
        """`GET /health`: True on HTTP 200. Never raises (but lets cancellation through)."""
        if self._session is None:
            return False
        try:
            async with self._session.get(
                self.url + "/health", timeout=aiohttp.ClientTimeout(total=self.health_timeout)
            ) as resp:
                return resp.status == 200
        except Exception:
            return False

    async def info(self) -> BackendInfo:
        """`GET /info`. Raises BackendError (unavailable, timeout, protocol, ...)."""
        status, body = await self._call("GET", "/info", None)
        if status != 200:
            raise self._status_error(status, body)
        try:
            raw = json.loads(body)
            if not isinstance(raw, dict):
                raise ValueError("/info is not a JSON object")
            return BackendInfo.from_json(raw)
        except ValueError as err:
            raise self._error("protocol", f"GET /info: {err}") from None

    async def tokenize(self, inputs: str) -> int | None:
        """`POST /tokenize`: the number of tokens of `inputs`, or None if the backend has no
        such route (TGI answers 404 when the model has no fast tokenizer)."""
        status, body = await self._call("POST", "/tokenize", {"inputs": inputs})
        if status in (404, 405):
            return None
        if status != 200:
            raise self._status_error(status, body)
        try:
            tokens = json.loads(body)
        except ValueError:
            tokens = None
        if not isinstance(tokens, list):
            raise self._error("protocol", f"POST /tokenize: not a list: {_excerpt(body)}")
        return len(tokens)

    async def gauges(self, names: Collection[str]) -> dict[str, float]:
        """`GET /metrics`: the values of the unlabelled gauges `names` that it has (Prometheus
        text). Raises BackendError."""
        status, body = await self._call("GET", "/metrics", None)
        if status != 200:
            raise self._status_error(status, body)
        out: dict[str, float] = {}
        for line in body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(" ")
            if name in names:  # `name value [timestamp]`; labelled samples have `name{`
                with contextlib.suppress(ValueError):
                    out[name] = float(value.split(" ", 1)[0])
        return out

    async def _call(self, method: str, path: str, body: object) -> tuple[int, bytes]:
        """One small request: (status, body), transport failures as BackendError."""
        timeout = aiohttp.ClientTimeout(
            total=self.request_timeout, sock_connect=self.connect_timeout
        )
        deadline = asyncio.get_running_loop().time() + self.request_timeout
        try:
            async with self.session.request(
                method, self.url + path, json=body, timeout=timeout
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind, message = _classify(exc, deadline, self.request_timeout, None)
            raise self._error(kind, f"{method} {path}: {message}") from exc

    def _error(self, kind: BackendErrorKind, message: str, **kw: Any) -> BackendError:
        return BackendError(
            kind,
            message,
            tokens_received=0,
            backend=self.name,
            retryable=kind in _RETRYABLE_KINDS,
            **kw,
        )

    def _status_error(self, status: int, body: bytes) -> BackendError:
        kind, message, error_type = _error_from_body(status, body)
        return self._error(kind, message, status=status, error_type=error_type)

    # ---- streaming -------------------------------------------------------------------------

    def generate_stream(
        self,
        inputs: str,
        parameters: TGIParameters | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> TGIStream:
        """`POST /generate_stream`: an async iterator of `StreamEvent`, one per token.

        Nothing is sent until the first `__anext__`. `timeout` bounds the whole request (time
        to the first byte included); the backend's `idle_timeout` bounds each silence. Failures
        raise `BackendError` from the iteration, after every token received before them.

        Close it early with `aclose()`/`close()`, `async with`, `break` (the iterator is closed
        when dropped) or by cancelling the consuming task: the HTTP connection is closed at
        once, and TGI drops the sequence at its next step.
        """
        params = (parameters or TGIParameters()).to_json()
        params["details"] = True  # the last event must carry finish_reason and token counts
        headers = {"Accept": "text/event-stream"}
        if request_id:
            headers["x-request-id"] = request_id
        return TGIStream(
            self, {"inputs": inputs, "parameters": params}, headers=headers, timeout=timeout
        )


def _classify(
    exc: BaseException, deadline: float | None, timeout: float | None, idle: float | None
) -> tuple[BackendErrorKind, str]:
    """The kind of a transport failure raised by aiohttp (or the OS)."""
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "timeout", f"no data for {idle} s (idle timeout)"
    if isinstance(exc, TimeoutError):
        # aiohttp raises ConnectionTimeoutError both for a slow connect and for a deadline that
        # passed while connecting (or waiting for a pooled connection): the clock tells.
        # (A millisecond of slack: timers may fire a hair before their time.)
        if deadline is not None and asyncio.get_running_loop().time() >= deadline - 1e-3:
            return "timeout", f"deadline of {timeout} s passed"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return "unavailable", f"connect timeout: {exc}"
        return "timeout", f"deadline of {timeout} s passed"
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS
        return "unavailable", f"cannot connect: {exc}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "unavailable", f"connection lost mid-stream: {exc}"
    return "unavailable", f"{type(exc).__name__}: {exc}"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class TGIStream:
    """The event stream of one `generate_stream` call (see `TGIBackend.generate_stream`).

    Async iterator and async context manager. A stream read to its end hands its connection
    back to the pool; a stream closed before its end closes its connection.
    """

    __slots__ = (
        "_backend",
        "_body",
        "_deadline",
        "_delivered",
        "_done",
        "_final",
        "_headers",
        "_parser",
        "_pending_ends_stream",
        "_pending_error",
        "_queue",
        "_resp",
        "_timeout",
    )

    def __init__(
        self,
        backend: TGIBackend,
        body: dict[str, Any],
        *,
        headers: dict[str, str],
        timeout: float | None,
    ) -> None:
        self._resp: aiohttp.ClientResponse | None = None
        if backend._session is None:
            raise RuntimeError(f"backend {backend.name} is not started")
        self._backend = backend
        self._body = body
        self._headers = headers
        self._timeout = timeout
        self._deadline: float | None = None
        self._parser = SSEParser(backend.max_event_bytes)
        self._queue: deque[StreamEvent] = deque()
        # An error found while decoding a chunk waits until the events before it were taken.
        self._pending_error: BackendError | None = None
        self._pending_ends_stream = False  # TGI's error event: the response ends right after
        self._delivered = 0
        self._final = False  # the last event was received
        self._done = False

    @property
    def tokens_received(self) -> int:
        """Token events handed to the caller so far."""
        return self._delivered

    def __aiter__(self) -> TGIStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._queue:
            self._delivered += 1
            return self._queue.popleft()
        if self._done:
            raise StopAsyncIteration
        try:
            return await self._advance()
        except BaseException:
            # The end, errors, cancellation of the consumer, anything: the connection must not
            # outlive the stream (close() is a no-op if it went back to the pool already).
            self.close()
            raise

    async def _advance(self) -> StreamEvent:
        resp = self._resp if self._resp is not None else await self._open()
        while True:
            if self._done:  # close() was called (by another task) while this one waited
                raise StopAsyncIteration
            if self._pending_error is not None:
                err, self._pending_error = self._pending_error, None
                if self._pending_ends_stream:
                    await self._drain(resp)
                err.tokens_received = self._delivered
                err.retryable = err.kind in _RETRYABLE_KINDS and self._delivered == 0
                raise err
            if self._final:
                await self._drain(resp)
                raise StopAsyncIteration
            try:
                chunk = await resp.content.readany()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if self._done:
                    raise StopAsyncIteration from None
                raise self._transport_error(exc) from exc
            if not chunk:
                cut = " in the middle of an event" if self._parser.pending else ""
                raise self._error("unavailable", f"the stream ended{cut} before its last event")
            try:
                payloads = self._parser.feed(chunk)
            except SSEError as exc:
                payloads = []
                self._pending_error = self._error("protocol", str(exc))
            self._decode(payloads)
            if self._queue:
                self._delivered += 1
                return self._queue.popleft()

    def _decode(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            if self._final or self._pending_error is not None:
                return  # nothing after the last event (or an error) counts
            try:
                event = parse_stream_event(payload)
            except ValueError as exc:
                if payload.strip() == b"[DONE]":
                    continue  # OpenAI-style terminator some proxies add: harmless
                self._pending_error = self._error("protocol", str(exc))
                return
            if isinstance(event, StreamError):
                kind = _KIND_BY_ERROR_TYPE.get(event.error_type or "", "generation")
                self._pending_error = self._error(kind, event.message, error_type=event.error_type)
                self._pending_ends_stream = True
                return
            self._queue.append(event)
            if event.final:
                self._final = True

    async def _open(self) -> aiohttp.ClientResponse:
        backend = self._backend
        if self._timeout is not None and self._timeout <= 0:
            # aiohttp would read a total of 0 as "no deadline at all".
            raise self._error("timeout", "the deadline passed before the request was sent")
        timeout = aiohttp.ClientTimeout(
            total=self._timeout,
            sock_connect=backend.connect_timeout,
            sock_read=backend.idle_timeout,
        )
        loop = asyncio.get_running_loop()
        self._deadline = None if self._timeout is None else loop.time() + self._timeout
        try:
            resp = await backend.session.post(
                backend.url + "/generate_stream",
                json=self._body,
                headers=self._headers,
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._transport_error(exc) from exc
        self._resp = resp
        if resp.status != 200 or resp.content_type == "application/json":
            # Not a stream: a proxy's (or an old TGI's) error answer, read as TGI's error JSON.
            try:
                raw = await _read_limited(resp, _MAX_ERROR_BODY)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise self._transport_error(exc) from exc
            if resp.content.at_eof():
                resp.release()
            kind, message, error_type = _error_from_body(resp.status, raw)
            if resp.status == 200 and error_type is None and kind == "unavailable":
                kind, message = "protocol", f"a JSON answer instead of a stream: {_excerpt(raw)}"
            raise self._error(kind, message, status=resp.status, error_type=error_type)
        return resp

    async def _drain(self, resp: aiohttp.ClientResponse) -> None:
        """Read to the end of the response so that its connection can be reused."""
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                while await resp.content.readany():
                    pass
        except (aiohttp.ClientError, TimeoutError, OSError):
            resp.close()
        else:
            resp.release()

    def _transport_error(self, exc: BaseException) -> BackendError:
        kind, message = _classify(exc, self._deadline, self._timeout, self._backend.idle_timeout)
        return self._error(kind, message)

    def _error(
        self, kind: BackendErrorKind, message: str, *, status: int | None = None, **kw: Any
    ) -> BackendError:
        return BackendError(
            kind,
            message,
            tokens_received=self._delivered,
            backend=self._backend.name,
            retryable=kind in _RETRYABLE_KINDS and self._delivered == 0,
            status=status,
            **kw,
        )

    def close(self) -> None:
        """Stop the stream now. Its connection goes back to the pool only if the response was
        read to its end; otherwise it is closed, which makes TGI drop the sequence.

        Safe to call from another task while one waits in `__anext__`: that wait then ends
        with StopAsyncIteration (the stream ends without its last event).
        """
        self._done = True
        self._queue.clear()
        resp = self._resp
        if resp is not None and not resp.closed:
            if resp.content.at_eof() and resp.content.exception() is None:
                resp.release()
            else:
                resp.close()

    async def aclose(self) -> None:
        """Async spelling of `close()` (as async generators have)."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # `break` out of `async for` drops the iterator: close the connection right then
        # instead of leaving TGI generating for nobody until the response is collected.
        resp = getattr(self, "_resp", None)  # None too if __init__ failed
        if resp is not None and not resp.closed:
            # The loop may be gone at interpreter exit: nothing left to save then.
            with contextlib.suppress(Exception):
                resp.close()
