"""The gRPC door's cross-cutting concerns, as interceptors around every streamgate.v1 call (in
this order):

1. `CallInterceptor`: the call's identity and its end. It reads the call's metadata into a
   `Call` (request id, deadline, labels), made current for the handler (`current_call()`);
   it answers bytes that are not a request with INVALID_ARGUMENT; and every call ends here: a
   `GatewayError` (or an interruption by the gateway) becomes the status with its details,
   and the call is recorded (metrics, log line: the pipeline's finish stage).
2. `DrainingInterceptor`: refuses new generation calls while the gateway drains, and tracks the
   running ones so that shutdown can interrupt them.
3. `AuthInterceptor`: the API key → the caller (UNAUTHENTICATED otherwise).

None of them needs the request body; route authorization does, and is a pipeline stage.
Health and reflection are not intercepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from streamgate.gateway.calls import CallRegistry
from streamgate.gateway.grpc.status import rich_status
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason, internal_error
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s02_auth import authenticate
from streamgate.gateway.pipeline.s11_finish import Finish
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Tenancy

__all__ = [
    "AuthInterceptor",
    "CallInterceptor",
    "DrainingInterceptor",
    "current_call",
    "serve_call",
]

log = get_logger(__name__)

GENERATION_SERVICE = "streamgate.v1.GenerationService"
ADMIN_SERVICE = "streamgate.v1.AdminService"
_GENERATION_METHODS = frozenset({"GenerateStream", "Generate"})
_STREAMING_METHODS = frozenset({"GenerateStream"})
# A flood of corrupt requests must not flood the log: one warning per interval at most.
_MALFORMED_LOG_INTERVAL = 10.0

_CURRENT: ContextVar[Call] = ContextVar("streamgate_call")

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def current_call() -> Call:
    """The call the current handler serves (set by `CallInterceptor`)."""
    return _CURRENT.get()


def serve_call(call: Call) -> None:
    """Make `call` the current one for the running task: the browser door (gateway/connect)
    runs these servicers' handlers too."""
    _CURRENT.set(call)


class _Malformed:
    """What the request deserializer gives for bytes that are not a request."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns `_Malformed` instead of raising (gRPC would answer
    UNKNOWN and log a traceback for every such request)."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as err:
            return _Malformed(err)

    return parse


# Strings: the stubs make RpcMethodHandler generic, the runtime class is not subscriptable.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


class _Interceptor(grpc.aio.ServerInterceptor):
    """Runs the calls of `services` through `_around` (streamgate.v1 has only unary-request
    methods, answered by coroutines)."""

    services: frozenset[str] = frozenset({GENERATION_SERVICE, ADMIN_SERVICE})

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service not in self.services:
            return handler
        deserialize = self._deserializer(handler.request_deserializer)
        around = self._around

        def run(behavior: Behavior) -> Behavior:
            async def behave(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await around(behavior, request, context, method)

            return behave

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                run(cast(Behavior, handler.unary_unary)),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                run(cast(Behavior, handler.unary_stream)),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )
        return handler  # pragma: no cover - no streaming-request methods in streamgate.v1

    def _deserializer(
        self, deserialize: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        """The request deserializer to use (the service's own, unless overridden)."""
        return deserialize

    async def _around(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        """Run `behavior` for one call of `method`."""
        raise NotImplementedError


class CallInterceptor(_Interceptor):
    """The first interceptor (see the module doc).

    Args:
        finish: records each call's end (the pipeline's finish stage).
        metrics: the active streams gauge.
        status_timeout: how long the status of a failed call may wait behind unread messages.
    """

    def __init__(self, finish: Finish, metrics: GatewayMetrics, status_timeout: float) -> None:
        self._finish = finish
        self._metrics = metrics
        self._status_timeout = status_timeout
        self._malformed_logged_at = -_MALFORMED_LOG_INTERVAL
        self._malformed_unlogged = 0

    def _deserializer(
        self, deserialize: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        return _lenient(deserialize)

    async def _around(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        call = Call.start(
            method,
            context.invocation_metadata() or (),
            peer=context.peer() or "",
            time_remaining=context.time_remaining(),
            streaming=method in _STREAMING_METHODS,
        )
        _CURRENT.set(call)  # the handler's task runs this call only
        generation = method in _GENERATION_METHODS
        if generation:
            self._metrics.active_streams.inc()
        error: GatewayError | None = None
        code = Code.OK
        try:
            result = await self._handle(behavior, request, context, call)
        except GatewayError as err:
            error, code = err, err.code
        except asyncio.CancelledError:
            code = Code.DEADLINE_EXCEEDED if call.deadline_passed() else Code.CANCELLED
            raise  # the client cancelled or its deadline passed: gRPC ended the call
        except Exception:
            log.exception("unexpected failure", request_id=call.request_id, method=method)
            error = internal_error()
            code = error.code
        finally:
            if generation:
                self._metrics.active_streams.dec()
            valid = generation and not isinstance(request, _Malformed)
            self._finish(call, code, error, request if valid else None)
        if error is None:
            if call.trailing:
                context.set_trailing_metadata(tuple(call.trailing))
            return result
        try:
            # Bounded: a client that reads nothing holds the status behind its unread
            # messages. The status stays queued in gRPC; the handler need not wait for it.
            await asyncio.wait_for(
                context.abort_with_status(rich_status(error, call)), self._status_timeout
            )
        except TimeoutError:
            raise asyncio.CancelledError from None
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    async def _handle(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        call: Call,
    ) -> Any:
        """The handler's result; the gateway's interruption of the call as its error."""
        if isinstance(request, _Malformed):
            self._log_malformed(call, request.error)
            raise GatewayError(Reason.INVALID_ARGUMENT, f"malformed request: {request.error}")
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            if call.interruption is None:
                raise
            # The gateway interrupted the call (shutdown, stalled client): answer it.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise call.interruption from None
        finally:
            call.finishing = True

    def _log_malformed(self, call: Call, error: DecodeError) -> None:
        now = time.monotonic()
        if now - self._malformed_logged_at < _MALFORMED_LOG_INTERVAL:
            self._malformed_unlogged += 1
            return
        log.warning(
            "malformed request",
            request_id=call.request_id,
            method=call.method,
            peer=call.peer,
            error=str(error),
            not_logged_since=self._malformed_unlogged,
        )
        self._malformed_logged_at = now
        self._malformed_unlogged = 0


class DrainingInterceptor(_Interceptor):
    """Refuses generation calls while draining; tracks running ones (see the module doc)."""

    services = frozenset({GENERATION_SERVICE})

    def __init__(self, calls: CallRegistry) -> None:
        self._calls = calls

    async def _around(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        with self._calls.track(current_call()):
            return await behavior(request, context)


class AuthInterceptor(_Interceptor):
    """API key → caller for every streamgate.v1 call (see the module doc)."""

    def __init__(self, tenancy: Tenancy) -> None:
        self._tenancy = tenancy

    async def _around(
        self,
        behavior: Behavior,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
    ) -> Any:
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
                break
        current_call().caller = authenticate(authorization, self._tenancy)
        return await behavior(request, context)
