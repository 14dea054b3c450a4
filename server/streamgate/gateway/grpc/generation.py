"""`streamgate.v1.GenerationService` over gRPC: the pipeline's events written as messages.

Thin on purpose: the interceptors made the call (request id, caller, draining) and end it
(status, metrics, log line); the pipeline does the rest.
"""

from __future__ import annotations

import contextlib

import grpc

from streamgate.gateway.grpc.interceptors import current_call
from streamgate.gateway.messages import initial_metadata, stream_message, unary_response
from streamgate.gateway.pipeline.events import Start
from streamgate.gateway.pipeline.run import Pipeline
from streamgate.gateway.pipeline.s10_respond import collect
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

__all__ = ["GenerationServicer"]

StreamContext = grpc.aio.ServicerContext[pb.GenerateStreamRequest, pb.GenerateStreamResponse]
UnaryContext = grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse]
ModelsContext = grpc.aio.ServicerContext[pb.ListModelsRequest, pb.ListModelsResponse]


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """The generation RPCs over `pipeline`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def GenerateStream(  # type: ignore[override]  # a coroutine writing, not a generator
        self, request: pb.GenerateStreamRequest, context: StreamContext
    ) -> None:
        """Start (with the response headers), one Delta per backend step, End."""
        events = self._pipeline.generate(request, current_call())
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Start):
                    await context.send_initial_metadata(initial_metadata(event))
                await context.write(stream_message(event))

    async def Generate(
        self, request: pb.GenerateRequest, context: UnaryContext
    ) -> pb.GenerateResponse:
        """The same events, collected into one response."""
        answer = await collect(self._pipeline.generate(request, current_call()))
        await context.send_initial_metadata(initial_metadata(answer.start))
        return unary_response(answer)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: ModelsContext
    ) -> pb.ListModelsResponse:
        """The routes the caller may use, their backends' model ids and limits."""
        caller = current_call().authenticated
        routes = self._pipeline.routing.routes
        return pb.ListModelsResponse(
            models=[
                pb.Model(
                    name=route.name,
                    default=route.name == routes.default,
                    backend_models=route.model_ids(),
                    max_input_tokens=route.max_input_tokens or 0,
                    max_total_tokens=route.max_total_tokens or 0,
                )
                for route in routes
                if caller.tenant.may_use(route.name)
            ]
        )
