"""A small typed Python client for streamgate's `GenerationService`, sync and asyncio.

    from streamgate.client import Client, StreamDelta, StreamEnd

    with Client("127.0.0.1:50051", api_key="sk-...") as client:
        with client.generate_stream("Once upon a time", max_new_tokens=32) as stream:
            for event in stream:
                if isinstance(event, StreamDelta):
                    print(event.text, end="", flush=True)
                elif isinstance(event, StreamEnd):
                    print(f"\\n{event.finish_reason}, {event.usage.completion_tokens} tokens")

`AsyncClient` has the same methods over `grpc.aio` (`async for`, `await`). A stream yields frozen
dataclasses: one `StreamStart`, a `StreamDelta` per model step, one `StreamEnd`. Closing a stream
(`close()`, leaving its `with` block) cancels the call, and the gateway cancels the generation.

A non-OK status is raised as a `StreamgateError` subclass carrying the decoded google.rpc details
(reason, metadata, retry delay, field violations, tokens already sent, request id). Unset optional
parameters are left unset in the request, so the route's/backend's defaults apply; 0 is sent as
a real value.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Literal,
    Protocol,
    Self,
    TypeAlias,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
)

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

# googleapis-common-protos ships no py.typed marker, so mypy sees these modules as Any;
# `unused-ignore` keeps the lines valid should typed stubs be installed one day.
from google.rpc import error_details_pb2 as rpc_details  # type: ignore[import-untyped, unused-ignore]
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from streamgate_client.v1.generation_pb2_grpc import GenerationServiceAsyncStub

__all__ = [
    "DEFAULT_TARGET",
    "AsyncClient",
    "AsyncStream",
    "CallOptions",
    "Client",
    "DeadlineExceededError",
    "GenerateOptions",
    "Generation",
    "InternalError",
    "InvalidArgumentError",
    "MetadataLike",
    "ModelInfo",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestOptions",
    "ResourceExhaustedError",
    "Stream",
    "StreamDelta",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "StreamgateError",
    "Timings",
    "Token",
    "TopToken",
    "UnauthenticatedError",
    "UnavailableError",
    "Usage",
    "build_request",
    "error_from_rpc",
    "event_from_proto",
    "tls_credentials",
]

DEFAULT_TARGET = "127.0.0.1:50051"

MetadataLike: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]
"""Request metadata: a mapping or (key, value) pairs; keys are sent lower-cased (as gRPC needs)."""


# --- Events and results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopToken:
    """One alternative considered at a step (`top_n_tokens`)."""

    id: int
    text: str
    logprob: float


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token (only with `tokens=True` or `top_n_tokens > 0`)."""

    id: int
    text: str
    logprob: float
    special: bool
    top_tokens: tuple[TopToken, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Timings:
    """Durations measured by the gateway, in seconds."""

    queue_seconds: float = 0.0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    gateway_overhead_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamStart:
    """First event of a stream: where the request went.

    `cache_status` is "miss", "hit", "coalesced", "bypass" or "" (unspecified).
    """

    request_id: str
    model: str
    route: str
    backend: str
    cache_status: str
    input_tokens: int
    seed: int | None


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """The text of one model step (of several when the client reads slower than it generates).

    `text` may be empty for a step that produced only part of a multi-byte character.
    """

    text: str
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Last event of a stream that finished normally.

    `finish_reason` is "length", "eos_token", "stop_sequence" or "" (unspecified).
    """

    finish_reason: str
    usage: Usage
    timings: Timings


StreamEvent: TypeAlias = StreamStart | StreamDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class Generation:
    """The result of `generate()`: the whole text and where and how it was made."""

    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    request_id: str
    route: str
    backend: str
    model: str
    cache_status: str
    seed: int | None
    tokens: tuple[Token, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A route the gateway serves (`list_models()`); pass `name` as `model=`."""

    name: str
    default: bool
    backend_models: tuple[str, ...]
    max_input_tokens: int
    max_total_tokens: int


def _enum_text(enum: EnumDescriptor, value: int, prefix: str) -> str:
    """FINISH_REASON_EOS_TOKEN -> "eos_token"; *_UNSPECIFIED -> ""; a newer value -> its number."""
    known = enum.values_by_number.get(value)
    if known is None:  # an enum value added to the proto after this client was built
        return str(value)
    return "" if known.name.endswith("_UNSPECIFIED") else known.name.removeprefix(prefix).lower()


def _token(t: pb.Token) -> Token:
    top = tuple(TopToken(x.id, x.text, x.logprob) for x in t.top_tokens)
    return Token(t.id, t.text, t.logprob, t.special, top)


def _start(s: pb.Start) -> StreamStart:
    return StreamStart(
        request_id=s.request_id,
        model=s.model,
        route=s.route,
        backend=s.backend,
        cache_status=_enum_text(pb.CacheStatus.DESCRIPTOR, s.cache_status, "CACHE_STATUS_"),
        input_tokens=s.input_tokens,
        seed=s.seed if s.HasField("seed") else None,
    )


def _end(e: pb.End) -> StreamEnd:
    u, t = e.usage, e.timings
    return StreamEnd(
        finish_reason=_enum_text(pb.FinishReason.DESCRIPTOR, e.finish_reason, "FINISH_REASON_"),
        usage=Usage(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
        timings=Timings(
            t.queue_seconds,
            t.time_to_first_token_seconds,
            t.total_seconds,
            t.gateway_overhead_seconds,
        ),
    )


def event_from_proto(response: pb.GenerateStreamResponse) -> StreamEvent | None:
    """The typed event of one stream message; None for an event this client does not know."""
    kind = response.WhichOneof("event")
    if kind == "start":
        return _start(response.start)
    if kind == "delta":
        return StreamDelta(response.delta.text, tuple(_token(t) for t in response.delta.tokens))
    if kind == "end":
        return _end(response.end)
    return None


def _generation(response: pb.GenerateResponse, headers: Mapping[str, str]) -> Generation:
    start, end = _start(response.start), _end(response.end)
    # The initial metadata says the same as Start; it is the fallback if Start was left empty.
    return Generation(
        text=response.text,
        finish_reason=end.finish_reason,
        usage=end.usage,
        timings=end.timings,
        request_id=start.request_id or headers.get("x-request-id", ""),
        route=start.route or headers.get("x-route", ""),
        backend=start.backend or headers.get("x-backend", ""),
        model=start.model,
        cache_status=start.cache_status or headers.get("x-cache-status", ""),
        seed=start.seed,
        tokens=tuple(_token(t) for t in response.tokens),
    )


def _model_info(m: pb.Model) -> ModelInfo:
    return ModelInfo(
        m.name, m.default, tuple(m.backend_models), m.max_input_tokens, m.max_total_tokens
    )


# --- Errors -------------------------------------------------------------------------------------


class StreamgateError(Exception):
    """A call ended with a non-OK gRPC status; the google.rpc details are decoded into attributes.

    Attributes:
        code: the gRPC status code.
        message: the status message.
        details: every google.rpc detail message, unpacked (ErrorInfo, RetryInfo, BadRequest,
            QuotaFailure, ...); details of unknown types stay `google.protobuf.Any`.
        reason, domain, metadata: from ErrorInfo (reason is UPPER_SNAKE, e.g. "RATE_LIMITED").
        retry_delay: seconds to wait before retrying, from RetryInfo.
        field_violations: (field, description) pairs, from BadRequest.
        quota_violations: (subject, description) pairs, from QuotaFailure.
        tokens_sent: tokens delivered before a stream failed (ErrorInfo metadata `tokens_sent`).
        request_id: ErrorInfo's `request_id`, else the `x-request-id` the server sent, else the
            one the client sent.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[Message] = (),
        *,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: tuple[Message, ...] = tuple(details)
        self.reason: str | None = None
        self.domain: str | None = None
        self.metadata: dict[str, str] = {}
        self.retry_delay: float | None = None
        self.field_violations: list[tuple[str, str]] = []
        self.quota_violations: list[tuple[str, str]] = []
        for detail in self.details:
            if isinstance(detail, rpc_details.ErrorInfo) and self.reason is None:
                self.reason, self.domain = detail.reason, detail.domain
                self.metadata = dict(detail.metadata)
            elif isinstance(detail, rpc_details.RetryInfo):
                self.retry_delay = detail.retry_delay.ToTimedelta().total_seconds()
            elif isinstance(detail, rpc_details.BadRequest):
                self.field_violations += [(v.field, v.description) for v in detail.field_violations]
            elif isinstance(detail, rpc_details.QuotaFailure):
                self.quota_violations += [(v.subject, v.description) for v in detail.violations]
        self.tokens_sent: int | None = _int_or_none(self.metadata.get("tokens_sent"))
        self.request_id: str | None = self.metadata.get("request_id") or request_id

    def __str__(self) -> str:
        """One line: `CODE REASON: message (field: why; ...) [retry in 1 s] [request r-1]`."""
        head = self.code.name
        if self.reason and self.reason != head:
            head += f" {self.reason}"
        text = f"{head}: {self.message}" if self.message else head
        # Violations the message does not already spell out (servers often summarize there).
        missing = [
            (f, d)
            for f, d in self.field_violations
            if f not in self.message or d not in self.message
        ]
        if missing:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in missing) + ")"
        if self.retry_delay is not None:
            text += f" [retry in {self.retry_delay:g} s]"
        if self.request_id:
            text += f" [request {self.request_id}]"
        return " ".join(text.split())  # one line, whatever the server put in the message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(StreamgateError):
    """INVALID_ARGUMENT: a bad field; see `field_violations`."""


class NotFoundError(StreamgateError):
    """NOT_FOUND: unknown model/route (or a cache-only request that missed)."""


class UnauthenticatedError(StreamgateError):
    """UNAUTHENTICATED: no or invalid API key."""


class PermissionDeniedError(StreamgateError):
    """PERMISSION_DENIED: the key lacks access to this route."""


class ResourceExhaustedError(StreamgateError):
    """RESOURCE_EXHAUSTED: rate limit, overload or full queue; see `retry_delay`."""


class UnavailableError(StreamgateError):
    """UNAVAILABLE: no healthy backend, draining, unreachable gateway, or a backend that failed
    after `tokens_sent` tokens."""


class DeadlineExceededError(StreamgateError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class InternalError(StreamgateError):
    """INTERNAL: a failure inside the gateway or backend."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[StreamgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}

# Detail types a gateway may send (google/rpc/error_details.proto); others stay packed.
_DETAIL_TYPES: tuple[type[Message], ...] = (
    rpc_details.ErrorInfo,
    rpc_details.RetryInfo,
    rpc_details.BadRequest,
    rpc_details.QuotaFailure,
    rpc_details.PreconditionFailure,
    rpc_details.ResourceInfo,
    rpc_details.RequestInfo,
    rpc_details.DebugInfo,
    rpc_details.Help,
    rpc_details.LocalizedMessage,
)


def _unpack(detail: any_pb2.Any) -> Message:
    for kind in _DETAIL_TYPES:
        if detail.TypeName() == kind.DESCRIPTOR.full_name:
            message = kind()
            detail.Unpack(message)
            return message
    return detail


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class _FailedCall(Protocol):
    """What both a failed sync call (grpc.RpcError that is a grpc.Call) and
    grpc.aio.AioRpcError offer, synchronously."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def initial_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...
    def trailing_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...


def error_from_rpc(err: grpc.RpcError, request_id: str | None = None) -> StreamgateError:
    """The typed error of a failed call (a sync `grpc.RpcError` or a `grpc.aio.AioRpcError`).

    `request_id` is the id the client sent, used when the server named none.
    """
    if not all(hasattr(err, m) for m in ("code", "details", "trailing_metadata")):
        return StreamgateError(grpc.StatusCode.UNKNOWN, str(err), request_id=request_id)
    call = cast(_FailedCall, err)
    details: list[Message] = []
    try:
        # from_call only uses code(), details() and trailing_metadata(), which AioRpcError has too.
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, call))
    except ValueError:  # the trailer contradicts the status: trust the status, drop the details
        status = None
    if status is not None:
        details = [_unpack(d) for d in status.details]
    headers = _metadata_dict(call.initial_metadata()) | _metadata_dict(call.trailing_metadata())
    code = call.code()
    cls = _ERROR_CLASSES.get(code, StreamgateError)
    return cls(
        code, call.details() or "", details, request_id=headers.get("x-request-id") or request_id
    )


def _metadata_dict(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """Text metadata as a dict (binary `-bin` values are left out)."""
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


# --- Requests -----------------------------------------------------------------------------------


class RequestOptions(TypedDict, total=False):
    """The request's fields, all optional; unset (or None) means "not sent": the route's and
    backend's defaults apply. Give `messages` instead of a prompt for a chat."""

    messages: Sequence[Mapping[str, str]] | None
    """Chat messages, each {"role": ..., "content": ...}, rendered with the route's template."""
    model: str
    """Route name; "" (the default) selects the default route."""
    max_new_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    typical_p: float | None
    repetition_penalty: float | None
    frequency_penalty: float | None
    seed: int | None
    do_sample: bool | None
    stop: Sequence[str] | None
    """Stop sequences (a single string counts as one sequence)."""
    truncate_input_tokens: int | None
    add_generation_prompt: bool | None
    """Chat only: append the template's assistant prefix (the server's default is true)."""
    tokens: bool
    """Include each token's id, text and logprob (default False)."""
    top_n_tokens: int
    """Alternatives per step (default 0); implies `tokens`."""
    cache_mode: Literal["bypass", "no_store", "only_if_cached"] | None
    cache_ttl_seconds: int
    cache_namespace: str


class CallOptions(TypedDict, total=False):
    """Per-call gRPC options."""

    request_id: str | None
    """Sent as `x-request-id` (the gateway makes one when absent)."""
    timeout: float | None
    """Deadline of the whole call in seconds, stream included (default: the client's)."""
    metadata: MetadataLike | None
    """Extra metadata for this call (labels such as `x-user-id`, `x-priority`)."""


class GenerateOptions(RequestOptions, CallOptions, total=False):
    """Keyword arguments of `generate()` and `generate_stream()`."""


_KNOWN_OPTIONS = GenerateOptions.__optional_keys__
_CACHE_MODES = {
    "bypass": pb.CACHE_MODE_BYPASS,
    "no_store": pb.CACHE_MODE_NO_STORE,
    "only_if_cached": pb.CACHE_MODE_ONLY_IF_CACHED,
}
_R = TypeVar("_R", pb.GenerateStreamRequest, pb.GenerateRequest)


def _fill_request(request: _R, prompt: str | None, options: RequestOptions) -> _R:
    # Keyword arguments are typed for mypy, but nothing stops a typo at run time: catch it here
    # rather than silently generating with a default.
    unknown = set(options) - _KNOWN_OPTIONS
    if unknown:
        raise TypeError(f"unknown generate option(s): {', '.join(sorted(unknown))}")
    messages = options.get("messages")
    if (prompt is None) == (messages is None):
        raise ValueError("give either a prompt or messages (exactly one)")
    request.model = options.get("model", "")
    if prompt is not None:
        request.prompt = prompt
    else:
        request.chat.SetInParent()  # an empty conversation is still a chat (and rejected as such)
        for i, m in enumerate(messages or ()):
            try:
                request.chat.messages.add(role=m["role"], content=m["content"])
            except KeyError as err:
                raise ValueError(f"messages[{i}] needs 'role' and 'content'") from err
        if (add := options.get("add_generation_prompt")) is not None:
            request.chat.add_generation_prompt = add

    # Assigning a sub-field marks the sub-message present: only given values are assigned.
    s = request.sampling
    if (do_sample := options.get("do_sample")) is not None:
        s.do_sample = do_sample
    if (temperature := options.get("temperature")) is not None:
        s.temperature = temperature
    if (top_k := options.get("top_k")) is not None:
        s.top_k = top_k
    if (top_p := options.get("top_p")) is not None:
        s.top_p = top_p
    if (typical_p := options.get("typical_p")) is not None:
        s.typical_p = typical_p
    if (repetition_penalty := options.get("repetition_penalty")) is not None:
        s.repetition_penalty = repetition_penalty
    if (frequency_penalty := options.get("frequency_penalty")) is not None:
        s.frequency_penalty = frequency_penalty
    if (seed := options.get("seed")) is not None:
        s.seed = seed

    if (max_new_tokens := options.get("max_new_tokens")) is not None:
        request.stopping.max_new_tokens = max_new_tokens
    if (truncate := options.get("truncate_input_tokens")) is not None:
        request.stopping.truncate_input_tokens = truncate
    stop = options.get("stop")
    if stop:
        request.stopping.stop_sequences.extend([stop] if isinstance(stop, str) else stop)

    if options.get("tokens"):
        request.response.tokens = True
    if top_n := options.get("top_n_tokens", 0):
        request.response.top_n_tokens = top_n

    if (mode := options.get("cache_mode")) is not None:
        request.cache.mode = _CACHE_MODES[mode]
    if ttl := options.get("cache_ttl_seconds", 0):
        request.cache.ttl_seconds = ttl
    if namespace := options.get("cache_namespace", ""):
        request.cache.namespace = namespace
    return request


def build_request(
    prompt: str | None = None, **options: Unpack[RequestOptions]
) -> pb.GenerateStreamRequest:
    """The `GenerateStreamRequest` that `generate_stream(prompt, **options)` sends."""
    return _fill_request(pb.GenerateStreamRequest(), prompt, options)


def _metadata_pairs(metadata: MetadataLike | None) -> list[tuple[str, str]]:
    items = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    return [(k.lower(), v) for k, v in items]


# --- Streams ------------------------------------------------------------------------------------


class Stream(Iterator[StreamEvent]):
    """The events of one `GenerateStream` call (sync). Iterate it; `close()` (or leaving its
    `with` block) cancels the call. Errors are raised as `StreamgateError` while iterating."""

    def __init__(
        self, call: grpc._CallIterator[pb.GenerateStreamResponse], request_id: str | None
    ) -> None:
        self._call = call
        self._request_id = request_id
        self._finished = False
        self._closed = False

    def __next__(self) -> StreamEvent:
        while not self._finished:
            try:
                response = next(self._call)
            except StopIteration:
                self._finished = True
                break
            except grpc.RpcError as err:
                self._finished = True
                if self._closed:  # the CANCELLED status of our own close()
                    break
                raise error_from_rpc(err, self._request_id) from err
            event = event_from_proto(response)
            if event is not None:
                return event
        raise StopIteration

    def initial_metadata(self) -> dict[str, str]:
        """The gateway's response headers (x-request-id, x-route, x-backend, x-cache-status);
        waits for them to arrive."""
        return _metadata_dict(self._call.initial_metadata())

    def close(self) -> None:
        """Cancel the call if it is still running (the gateway stops generating)."""
        self._closed = True
        if not self._finished:
            self._finished = True
            self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStream(AsyncIterator[StreamEvent]):
    """The events of one `GenerateStream` call (asyncio). Iterate it with `async for`;
    `await aclose()` (or leaving its `async with` block) cancels the call."""

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[pb.GenerateStreamRequest, pb.GenerateStreamResponse],
        request_id: str | None,
    ) -> None:
        self._call = call
        self._request_id = request_id
        self._finished = False

    async def __anext__(self) -> StreamEvent:
        while not self._finished:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as err:
                self._finished = True
                raise error_from_rpc(err, self._request_id) from err
            except asyncio.CancelledError:
                if self._finished:  # aclose() from another task cancelled the call
                    break
                raise
            if not isinstance(response, pb.GenerateStreamResponse):  # grpc.aio.EOF
                self._finished = True
                break
            event = event_from_proto(response)
            if event is not None:
                return event
        raise StopAsyncIteration

    async def initial_metadata(self) -> dict[str, str]:
        """The gateway's response headers (x-request-id, x-route, x-backend, x-cache-status)."""
        return _metadata_dict(await self._call.initial_metadata())

    async def aclose(self) -> None:
        """Cancel the call if it is still running (the gateway stops generating)."""
        if not self._finished:
            self._finished = True
            self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- Clients ------------------------------------------------------------------------------------


def tls_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files: `ca_file` to trust (default: the system's roots), and a
    client certificate and key for a gateway that requires mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as file:
            return file.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )


class _ClientBase:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None,
        timeout: float | None,
        metadata: MetadataLike | None,
        tls: bool,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        pairs = _metadata_pairs(metadata)
        if api_key:
            pairs.insert(0, ("authorization", f"Bearer {api_key}"))
        self._metadata = tuple(pairs)
        self._credentials = credentials or (grpc.ssl_channel_credentials() if tls else None)

    def _call_options(
        self, options: CallOptions
    ) -> tuple[float | None, tuple[tuple[str, str], ...]]:
        timeout = options.get("timeout")
        pairs = [*self._metadata, *_metadata_pairs(options.get("metadata"))]
        if request_id := options.get("request_id"):
            pairs.append(("x-request-id", request_id))
        return (self.timeout if timeout is None else timeout), tuple(pairs)


class Client(_ClientBase):
    """A synchronous client over one gRPC channel; use it as a context manager (or `close()`).

    Args:
        target: "host:port" of the gateway.
        api_key: sent as `authorization: Bearer <key>` on every call.
        timeout: default deadline of each call in seconds (a stream's whole duration).
        metadata: sent on every call.
        tls: use TLS with the system's root certificates.
        credentials: explicit channel credentials (implies TLS).
        options: gRPC channel options, e.g. [("grpc.max_receive_message_length", 64 << 20)].
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        tls: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, int | str]] | None = None,
    ) -> None:
        super().__init__(
            target,
            api_key=api_key,
            timeout=timeout,
            metadata=metadata,
            tls=tls,
            credentials=credentials,
        )
        opts = list(options or ())
        self._channel = (
            grpc.secure_channel(target, self._credentials, opts)
            if self._credentials
            else grpc.insecure_channel(target, opts)
        )
        self._stub = pb_grpc.GenerationServiceStub(self._channel)

    def generate_stream(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> Stream:
        """Start a generation and return its events as they are produced.

        Options are `RequestOptions` (model, sampling, stopping, response, cache) and
        `CallOptions` (request_id, timeout, metadata). The call starts at once; errors are
        raised while iterating.
        """
        request = _fill_request(pb.GenerateStreamRequest(), prompt, options)
        timeout, metadata = self._call_options(options)
        call = self._stub.GenerateStream(request, timeout=timeout, metadata=metadata)
        return Stream(call, options.get("request_id"))

    def generate(self, prompt: str | None = None, **options: Unpack[GenerateOptions]) -> Generation:
        """Generate and return the whole result (the unary `Generate` call)."""
        request = _fill_request(pb.GenerateRequest(), prompt, options)
        timeout, metadata = self._call_options(options)
        try:
            response, call = self._stub.Generate.with_call(
                request, timeout=timeout, metadata=metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err, options.get("request_id")) from err
        return _generation(response, _metadata_dict(call.initial_metadata()))

    def list_models(
        self, *, timeout: float | None = None, metadata: MetadataLike | None = None
    ) -> list[ModelInfo]:
        """The routes the gateway serves."""
        timeout, pairs = self._call_options({"timeout": timeout, "metadata": metadata})
        try:
            response = self._stub.ListModels(
                pb.ListModelsRequest(), timeout=timeout, metadata=pairs
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return [_model_info(m) for m in response.models]

    def close(self) -> None:
        """Close the channel (cancelling calls still running on it)."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """An asyncio client over one `grpc.aio` channel; use it as an async context manager (or
    `await close()`). Create it inside the event loop that uses it. Arguments as `Client`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        tls: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, int | str]] | None = None,
    ) -> None:
        super().__init__(
            target,
            api_key=api_key,
            timeout=timeout,
            metadata=metadata,
            tls=tls,
            credentials=credentials,
        )
        opts = list(options or ())
        self._channel = (
            grpc.aio.secure_channel(target, self._credentials, opts)
            if self._credentials
            else grpc.aio.insecure_channel(target, opts)
        )
        self._stub: GenerationServiceAsyncStub = pb_grpc.GenerationServiceStub(self._channel)

    def generate_stream(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> AsyncStream:
        """Start a generation and return its events (`async for`); see `Client.generate_stream`."""
        request = _fill_request(pb.GenerateStreamRequest(), prompt, options)
        timeout, metadata = self._call_options(options)
        call = self._stub.GenerateStream(request, timeout=timeout, metadata=metadata)
        return AsyncStream(call, options.get("request_id"))

    async def generate(
        self, prompt: str | None = None, **options: Unpack[GenerateOptions]
    ) -> Generation:
        """Generate and return the whole result (the unary `Generate` call)."""
        request = _fill_request(pb.GenerateRequest(), prompt, options)
        timeout, metadata = self._call_options(options)
        call = self._stub.Generate(request, timeout=timeout, metadata=metadata)
        try:
            response = await call
            headers = _metadata_dict(await call.initial_metadata())
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err, options.get("request_id")) from err
        return _generation(response, headers)

    async def list_models(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline, sent to the server)
        metadata: MetadataLike | None = None,
    ) -> list[ModelInfo]:
        """The routes the gateway serves."""
        timeout, pairs = self._call_options({"timeout": timeout, "metadata": metadata})
        try:
            response = await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=timeout, metadata=pairs
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from err
        return [_model_info(m) for m in response.models]

    async def close(self) -> None:
        """Close the channel (cancelling calls still running on it)."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
