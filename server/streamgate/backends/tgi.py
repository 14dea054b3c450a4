"""The TGI backend adapter: TGI's HTTP API over one pooled aiohttp session per backend.

The gateway uses this for every backend, a real TGI fleet or `streamgate engine` alike. What it
relies on (TGI v3.3, router/src/server.rs; the wire format is `streamgate.tgi`):

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
import json
import math
from collections.abc import AsyncGenerator, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from streamgate.backends.errors import RETRYABLE_KINDS, BackendError, BackendErrorKind
from streamgate.config import BackendConfig
from streamgate.tgi import (
    DEFAULT_MAX_EVENT_BYTES,
    GenerateParameters,
    SSEError,
    SSEParser,
    StreamError,
    StreamEvent,
    error_kind,
    excerpt,
    parse_error_body,
    parse_stream_event,
)

__all__ = ["BackendInfo", "TGIBackend"]

# An error body is a short JSON object; anything longer is not worth reading.
_MAX_ERROR_BODY = 64 * 1024
# After the last event (or an error event) TGI ends the response at once; reading up to that end
# lets the connection go back to the pool. A server that does not end it loses the connection.
_DRAIN_TIMEOUT = 1.0
_NO_PARAMETERS = GenerateParameters()
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


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


class TGIBackend:
    """One TGI backend (a replica): a pooled HTTP session and TGI's routes over it.

    Call `await start()` before use and `await close()` at the end (or use `async with`). The
    connection limit (`config.max_connections`) bounds the streams in flight to this backend
    (HTTP/1.1: one connection per stream); a request beyond it waits for a free connection
    within its own deadline.

    Args:
        config: the backend's config section. `url` is the base URL, e.g.
            `http://10.0.0.5:8080` (a path prefix is kept); `name` names it in errors and logs;
            `idle_timeout_seconds` bounds the silence between two reads of a stream (also
            before the response headers): any bytes, keep-alive comments included, reset it.
            TGI sends keep-alives every 15 s, so keep it well above that for real TGI.
            `request_timeout_seconds` bounds `info` and `tokenize`, `health_timeout_seconds`
            bounds `health`.
        keepalive_timeout: how long an idle pooled connection is kept open.
        max_event_bytes: the largest SSE event accepted.
    """

    def __init__(
        self,
        config: BackendConfig,
        *,
        keepalive_timeout: float = 30.0,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.config = config
        self.url = config.url.rstrip("/")
        self.name = config.name
        self.keepalive_timeout = keepalive_timeout
        self.max_event_bytes = max_event_bytes
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_url(cls, url: str, *, name: str | None = None, **settings: Any) -> TGIBackend:
        """A backend at `url` with the config defaults, e.g. for tests:
        `TGIBackend.for_url(url, idle_timeout_seconds=1.0)`. `name` defaults to the URL;
        `settings` are other `BackendConfig` fields."""
        return cls(BackendConfig(name=name or url, url=url, **settings))

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the pooled session (idempotent); must run on the loop that will use it."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.keepalive_timeout,
            # aiohttp rounds timeouts of 5 s and more up to whole seconds (to share timers);
            # a request's deadline must fire when it is due, not up to a second later.
            timeout_ceil_threshold=math.inf,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.config.connect_timeout_seconds
            ),
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
        timeout = aiohttp.ClientTimeout(total=self.config.health_timeout_seconds)
        try:
            async with self._session.get(self.url + "/health", timeout=timeout) as resp:
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
            raise self._error("protocol", f"POST /tokenize: not a list: {excerpt(body)}")
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
        total = self.config.request_timeout_seconds
        timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=self.config.connect_timeout_seconds
        )
        deadline = asyncio.get_running_loop().time() + total
        try:
            async with self.session.request(
                method, self.url + path, json=body, timeout=timeout
            ) as resp:
                return resp.status, await resp.read()
        except _TRANSPORT_ERRORS as exc:
            kind, message = _classify(exc, deadline, total, None)
            raise self._error(kind, f"{method} {path}: {message}") from exc

    # ---- streaming -------------------------------------------------------------------------

    def generate_stream(
        self,
        inputs: str,
        parameters: GenerateParameters | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """`POST /generate_stream`: an async generator of `StreamEvent`, one per token.

        Nothing is sent until the first `anext()`. `timeout` bounds the whole request (time to
        the first byte included); the config's idle timeout bounds each silence. Failures raise
        `BackendError` from the iteration, after every token received before them. Raises
        RuntimeError at once if the backend is not started.

        A stream read to its end hands its connection back to the pool. Ended any other way
        (`aclose()`, e.g. through `contextlib.aclosing`, or by cancelling the task that waits in
        `anext()`) it closes its connection at once, and TGI drops the sequence at its next
        step. One task at a time may be inside the generator: to stop it from another task,
        cancel the task reading it first, then `aclose()` it.
        """
        session = self.session
        params = (parameters or _NO_PARAMETERS).to_json()
        params["details"] = True  # the last event must carry finish_reason and token counts
        headers = {"Accept": "text/event-stream"}
        if request_id:
            headers["x-request-id"] = request_id
        body = {"inputs": inputs, "parameters": params}
        return self._stream(session, body, headers, budget=timeout)

    async def _stream(
        self,
        session: aiohttp.ClientSession,
        body: dict[str, Any],
        headers: dict[str, str],
        *,
        budget: float | None,
    ) -> AsyncGenerator[StreamEvent, None]:
        if budget is not None and budget <= 0:
            # aiohttp would read a total of 0 as "no deadline at all".
            raise self._error("timeout", "the deadline passed before the request was sent")
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        client_timeout = aiohttp.ClientTimeout(
            total=budget,
            sock_connect=self.config.connect_timeout_seconds,
            sock_read=self.config.idle_timeout_seconds,
        )
        try:
            resp = await session.post(
                self.url + "/generate_stream", json=body, headers=headers, timeout=client_timeout
            )
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc, deadline, budget, 0) from exc
        received = 0  # token events yielded
        try:
            if resp.status != 200 or resp.content_type == "application/json":
                # Not a stream: a proxy's (or an old TGI's) error answer.
                raise await self._answer_error(resp, deadline, budget)
            parser = SSEParser(self.max_event_bytes)
            while True:
                try:
                    chunk = await resp.content.readany()
                except _TRANSPORT_ERRORS as exc:
                    raise self._transport_error(exc, deadline, budget, received) from exc
                if not chunk:
                    cut = " in the middle of an event" if parser.pending else ""
                    message = f"the stream ended{cut} before its last event"
                    raise self._error("unavailable", message, received=received)
                try:
                    payloads = parser.feed(chunk)
                except SSEError as exc:
                    raise self._error("protocol", str(exc), received=received) from None
                for payload in payloads:
                    try:
                        event = parse_stream_event(payload)
                    except ValueError as exc:
                        if payload.strip() == b"[DONE]":
                            continue  # OpenAI-style terminator some proxies add: harmless
                        raise self._error("protocol", str(exc), received=received) from None
                    if isinstance(event, StreamError):
                        await _drain(resp)  # TGI ends the response right after its error
                        raise self._error(
                            error_kind(event.error_type),
                            event.message,
                            received=received,
                            error_type=event.error_type,
                        )
                    received += 1
                    yield event
                    if event.final:  # nothing after the last event counts
                        await _drain(resp)
                        return
        finally:
            # However the stream ends (its end, an error, aclose(), a cancelled reader), its
            # connection must not outlive it; one read to its end may be reused.
            if not resp.closed:
                if resp.content.at_eof() and resp.content.exception() is None:
                    resp.release()
                else:
                    resp.close()

    async def _answer_error(
        self, resp: aiohttp.ClientResponse, deadline: float | None, budget: float | None
    ) -> BackendError:
        """The error of an answer that is not a stream."""
        try:
            raw = await _read_limited(resp, _MAX_ERROR_BODY)
        except _TRANSPORT_ERRORS as exc:
            return self._transport_error(exc, deadline, budget, 0)
        if resp.content.at_eof():
            resp.release()
        return self._status_error(resp.status, raw)

    # ---- errors ----------------------------------------------------------------------------

    def _error(
        self,
        kind: BackendErrorKind,
        message: str,
        *,
        received: int = 0,
        status: int | None = None,
        error_type: str | None = None,
    ) -> BackendError:
        return BackendError(
            kind,
            message,
            tokens_received=received,
            backend=self.name,
            retryable=kind in RETRYABLE_KINDS and received == 0,
            status=status,
            error_type=error_type,
        )

    def _status_error(self, status: int, body: bytes) -> BackendError:
        """The error of a non-200 (or JSON) answer: TGI's error JSON if it is one."""
        message, error_type = parse_error_body(body) or (excerpt(body) or "(empty body)", None)
        kind: BackendErrorKind = error_kind(error_type, status)
        message = f"HTTP {status}: {message}"
        if status == 200 and error_type is None and kind == "unavailable":
            kind, message = "protocol", f"a JSON answer instead of a stream: {excerpt(body)}"
        return self._error(kind, message, status=status, error_type=error_type)

    def _transport_error(
        self, exc: BaseException, deadline: float | None, timeout: float | None, received: int
    ) -> BackendError:
        kind, message = _classify(exc, deadline, timeout, self.config.idle_timeout_seconds)
        return self._error(kind, message, received=received)


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


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read to the end of the response so that its connection can be reused."""
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT):
            while await resp.content.readany():
                pass
    except _TRANSPORT_ERRORS:
        resp.close()
    else:
        resp.release()
