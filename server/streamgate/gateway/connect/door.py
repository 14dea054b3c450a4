"""The life of every call through the browser door, whatever its protocol (Connect, gRPC-Web, JSON
lines): what the gRPC door's interceptors do, with HTTP headers for metadata.

    serving = door.open(method, headers, peer=..., time_remaining=...)   # the Call
    try:
        async with door.guard(serving, request):   # the caller, draining, errors
            ...                                     # the handler: the pipeline, a servicer
    finally:
        door.close(serving, error)                  # metrics and log line

`guard` raises every failure as a `ConnectError` with the google.rpc details (errors.py), and
answers a call the gateway interrupted (shutdown, a stalled client) with the interruption's
error rather than a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from connectrpc.errors import ConnectError

from streamgate.gateway.calls import CallRegistry
from streamgate.gateway.connect.errors import connect_error, gateway_code
from streamgate.gateway.grpc.interceptors import serve_call
from streamgate.gateway.pipeline.errors import Code, GatewayError, internal_error
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s02_auth import authenticate
from streamgate.gateway.pipeline.s03_prepare import GenerationRequest
from streamgate.gateway.pipeline.s11_finish import Finish
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tenancy import Tenancy

__all__ = ["Door", "Serving", "current_serving"]

log = get_logger(__name__)

_GENERATION_METHODS = frozenset({"GenerateStream", "Generate"})
_STREAMING_METHODS = frozenset({"GenerateStream"})
# Headers of the browser protocols themselves: not labels of the call.
_TRANSPORT_HEADERS = frozenset({"x-grpc-web", "x-user-agent"})

_CURRENT: ContextVar[Serving] = ContextVar("streamgate_serving")


def current_serving() -> Serving:
    """The call the running task serves (set by `Door.open`)."""
    return _CURRENT.get()


@dataclass(eq=False)
class Serving:
    """One call while the door serves it."""

    call: Call
    authorization: str
    """The `authorization` header ("" when absent)."""
    request: GenerationRequest | None = None
    """The request of a generation call, once read (its log line shows it)."""
    error: GatewayError | None = None
    """The failure it was answered with, if any."""

    @property
    def generation(self) -> bool:
        return self.call.method in _GENERATION_METHODS


class Door:
    """Opens, guards and closes the browser door's calls (one instance, from the composition
    root).

    Args:
        tenancy: API keys → callers.
        calls: the calls in progress (refused while draining, interrupted at shutdown).
        finish: records each call's end (the pipeline's finish stage).
        metrics: the active streams gauge.
    """

    def __init__(
        self, tenancy: Tenancy, calls: CallRegistry, finish: Finish, metrics: GatewayMetrics
    ) -> None:
        self._tenancy = tenancy
        self._calls = calls
        self._finish = finish
        self._metrics = metrics

    def open(
        self,
        method: str,
        headers: Iterable[tuple[str, str]],
        *,
        peer: str,
        time_remaining: float | None,
    ) -> Serving:
        """A call of `method` from its request headers, current for the running task (its
        handlers run in that task)."""
        metadata = [(k.lower(), v) for k, v in headers if k.lower() not in _TRANSPORT_HEADERS]
        call = Call.start(
            method,
            metadata,
            peer=peer,
            time_remaining=time_remaining,
            streaming=method in _STREAMING_METHODS,
        )
        serving = Serving(call, authorization=dict(metadata).get("authorization", ""))
        _CURRENT.set(serving)
        serve_call(call)
        if serving.generation:
            self._metrics.active_streams.inc()
        return serving

    @contextlib.asynccontextmanager
    async def guard(self, serving: Serving, request: object) -> AsyncIterator[None]:
        """Authenticate the call and track a generation for the block; every failure leaves it
        as a ConnectError."""
        call = serving.call
        if serving.generation and isinstance(request, GenerationRequest):
            serving.request = request
        try:
            call.caller = authenticate(serving.authorization, self._tenancy)
            tracked = self._calls.track(call) if serving.generation else contextlib.nullcontext()
            with tracked:
                try:
                    yield
                except asyncio.CancelledError:
                    if call.interruption is None:
                        raise  # the client left or its deadline passed
                    # The gateway interrupted the call: answer it.
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    raise call.interruption from None
        except GatewayError as err:
            serving.error = err
            raise connect_error(err, call) from None
        except (ConnectError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            log.exception("unexpected failure", request_id=call.request_id, method=call.method)
            serving.error = internal_error()
            raise connect_error(serving.error, call) from None
        finally:
            call.finishing = True

    def close(self, serving: Serving, error: BaseException | None) -> None:
        """Record the end of the call, which ended with `error` (None: it succeeded)."""
        call = serving.call
        failure = serving.error or call.interruption
        if failure is not None:
            code = failure.code
        elif error is None:
            code = Code.OK
        elif isinstance(error, ConnectError):
            code = gateway_code(error)
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            code = Code.CANCELLED
        else:
            code = Code.INTERNAL
        if code == Code.CANCELLED and call.deadline_passed():
            code = Code.DEADLINE_EXCEEDED
        if serving.generation:
            self._metrics.active_streams.dec()
        self._finish(call, code, failure, serving.request)
