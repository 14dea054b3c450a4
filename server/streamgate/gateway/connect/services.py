"""`streamgate.v1` over the Connect runtime: the services (thin, like the gRPC door's servicers)
and the interceptors that run every call through the door (door.py).

`GenerateStream` writes the pipeline's events as messages, its Start's metadata as response
headers; `Generate` collects the same events. `ListModels` and the admin calls run the gRPC
door's servicers (their gRPC context goes unused), so each is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from connectrpc.request import RequestContext

from streamgate.gateway.connect.door import Door, Serving, current_serving
from streamgate.gateway.grpc.admin import AdminServicer
from streamgate.gateway.grpc.generation import GenerationServicer
from streamgate.gateway.grpc.interceptors import current_call
from streamgate.gateway.messages import initial_metadata, stream_message, unary_response
from streamgate.gateway.pipeline.events import Start
from streamgate.gateway.pipeline.run import Pipeline
from streamgate.gateway.pipeline.s10_respond import collect
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import generation_pb2 as pb

__all__ = ["AdminService", "CallInterceptor", "GenerationService", "GuardInterceptor"]

REQ = TypeVar("REQ")
RES = TypeVar("RES")
Context = RequestContext[Any, Any]
# The servicers read their call from `current_call()`, never from their gRPC context.
_NO_GRPC_CONTEXT = cast("grpc.aio.ServicerContext[Any, Any]", None)


class GenerationService:
    """`streamgate.v1.GenerationService` (v1/generation_connect.py) over `pipeline`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._servicer = GenerationServicer(pipeline)

    async def generate_stream(
        self, request: pb.GenerateStreamRequest, ctx: Context
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        """Start (its metadata in the response headers), one Delta per backend step, End."""
        events = self._pipeline.generate(request, current_call())
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Start):
                    ctx.response_headers.update(initial_metadata(event))
                yield stream_message(event)

    async def generate(self, request: pb.GenerateRequest, ctx: Context) -> pb.GenerateResponse:
        """The same events, collected into one response."""
        answer = await collect(self._pipeline.generate(request, current_call()))
        ctx.response_headers.update(initial_metadata(answer.start))
        return unary_response(answer)

    async def list_models(
        self, request: pb.ListModelsRequest, ctx: Context
    ) -> pb.ListModelsResponse:
        """The routes the caller may use."""
        return await self._servicer.ListModels(request, _NO_GRPC_CONTEXT)


class AdminService:
    """`streamgate.v1.AdminService` (admin keys only), as the gRPC door serves it."""

    def __init__(self, servicer: AdminServicer) -> None:
        self._servicer = servicer

    async def invalidate_cache(
        self, request: admin_pb.InvalidateCacheRequest, ctx: Context
    ) -> admin_pb.InvalidateCacheResponse:
        """Drop entries by key, namespace, tenant or all."""
        return await self._servicer.InvalidateCache(request, _NO_GRPC_CONTEXT)

    async def get_cache_stats(
        self, request: admin_pb.GetCacheStatsRequest, ctx: Context
    ) -> admin_pb.GetCacheStatsResponse:
        """Entries, bytes and outcome counts."""
        return await self._servicer.GetCacheStats(request, _NO_GRPC_CONTEXT)


class CallInterceptor:
    """Opens each call before its request is read and closes it once answered (a Connect
    metadata interceptor: it sees calls the runtime refuses too, e.g. unreadable requests)."""

    def __init__(self, door: Door) -> None:
        self._door = door

    async def on_start(self, ctx: Context) -> Serving:
        timeout_ms = ctx.timeout_ms
        serving = self._door.open(
            ctx.method.name,
            ctx.request_headers.allitems(),
            peer=ctx.client_address or "",
            time_remaining=None if timeout_ms is None else timeout_ms / 1000,
        )
        # The request id goes back on every answer, errors included.
        ctx.response_headers["x-request-id"] = serving.call.request_id
        return serving

    async def on_end(self, serving: Serving, ctx: Context, error: Exception | None) -> None:
        for key, value in serving.call.trailing:
            ctx.response_trailers[key] = value
        self._door.close(serving, error)


class GuardInterceptor:
    """Runs each handler inside `Door.guard` (the caller, draining, errors)."""

    def __init__(self, door: Door) -> None:
        self._door = door

    async def intercept_unary(
        self, call_next: Callable[[REQ, Context], Awaitable[RES]], request: REQ, ctx: Context
    ) -> RES:
        async with self._door.guard(current_serving(), request):
            return await call_next(request, ctx)

    async def intercept_server_stream(
        self, call_next: Callable[[REQ, Context], AsyncIterator[RES]], request: REQ, ctx: Context
    ) -> AsyncIterator[RES]:
        async with self._door.guard(current_serving(), request):
            responses = call_next(request, ctx)
            # Closed here, at once, when the client leaves: the pipeline closes the backend
            # stream and the engine drops the sequence at its next step.
            async with contextlib.aclosing(cast("Any", responses)):
                async for response in responses:
                    yield response
