"""The generated streamgate.v1 code: imports, field presence, the oneof input, enums, protoset."""

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import EnumDescriptor

from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc
from support.processes import ROOT

PROTOSET = ROOT / "loadtest" / "streamgate.protoset"
SERVICE = "streamgate.v1.GenerationService"


def test_modules_import_under_the_package_path() -> None:
    # Descriptor names stay the proto's (reflection, protosets and other languages use them);
    # only the Python module path carries the `api` prefix.
    assert pb.DESCRIPTOR.name == "streamgate/v1/generation.proto"
    assert pb.DESCRIPTOR.package == "streamgate.v1"
    assert pb.GenerateStreamRequest.__module__ == "streamgate_client.v1.generation_pb2"
    # The grpc module's import was rewritten to the package path (it is the same module object).
    assert vars(pb_grpc)["streamgate_dot_v1_dot_generation__pb2"] is pb
    methods = pb.DESCRIPTOR.services_by_name["GenerationService"].methods_by_name
    assert set(methods) == {"GenerateStream", "Generate", "ListModels"}
    assert methods["GenerateStream"].server_streaming
    assert not methods["GenerateStream"].client_streaming


def test_stub_and_servicer_are_generated() -> None:
    assert callable(pb_grpc.add_GenerationServiceServicer_to_server)
    channel = grpc.insecure_channel("127.0.0.1:1")  # lazy: never connects
    try:
        stub = pb_grpc.GenerationServiceStub(channel)
        assert callable(stub.GenerateStream)
    finally:
        channel.close()


def test_optional_zero_temperature_is_present_after_round_trip() -> None:
    explicit = pb.GenerateStreamRequest(
        prompt="hi", sampling=pb.SamplingParameters(temperature=0.0, seed=0, do_sample=False)
    )
    decoded = pb.GenerateStreamRequest.FromString(explicit.SerializeToString())
    assert decoded.sampling.HasField("temperature")
    assert decoded.sampling.temperature == 0.0
    assert decoded.sampling.HasField("seed")
    assert decoded.sampling.HasField("do_sample")
    assert not decoded.sampling.HasField("top_k")


def test_unset_optional_reads_zero_but_is_absent() -> None:
    request = pb.GenerateStreamRequest(prompt="hi", sampling=pb.SamplingParameters())
    decoded = pb.GenerateStreamRequest.FromString(request.SerializeToString())
    assert decoded.HasField("sampling")
    assert decoded.sampling.temperature == 0.0
    assert not decoded.sampling.HasField("temperature")
    decoded.sampling.temperature = 0.0
    assert decoded.sampling.HasField("temperature")
    decoded.sampling.ClearField("temperature")
    assert not decoded.sampling.HasField("temperature")


def test_oneof_input_round_trip_and_exclusivity() -> None:
    chat = pb.Messages(
        messages=[pb.Message(role="user", content="hi")], add_generation_prompt=False
    )
    request = pb.GenerateStreamRequest(model="tiny", chat=chat)
    decoded = pb.GenerateStreamRequest.FromString(request.SerializeToString())
    assert decoded.WhichOneof("input") == "chat"
    assert decoded.chat.messages[0].content == "hi"
    assert decoded.chat.HasField("add_generation_prompt")
    assert decoded.chat.add_generation_prompt is False

    decoded.prompt = "plain"  # setting the other member clears chat
    assert decoded.WhichOneof("input") == "prompt"
    assert not decoded.HasField("chat")
    assert pb.GenerateStreamRequest().WhichOneof("input") is None
    # An empty prompt is still a choice: presence, not the value, tells what was sent.
    empty = pb.GenerateStreamRequest.FromString(
        pb.GenerateStreamRequest(prompt="").SerializeToString()
    )
    assert empty.WhichOneof("input") == "prompt"


def test_stream_response_event_oneof() -> None:
    events = [
        pb.GenerateStreamResponse(start=pb.Start(request_id="r1", seed=0)),
        pb.GenerateStreamResponse(delta=pb.Delta(text="a", tokens=[pb.Token(id=1, text="a")])),
        pb.GenerateStreamResponse(end=pb.End(finish_reason=pb.FINISH_REASON_LENGTH)),
    ]
    decoded = [pb.GenerateStreamResponse.FromString(e.SerializeToString()) for e in events]
    assert [e.WhichOneof("event") for e in decoded] == ["start", "delta", "end"]
    assert decoded[0].start.HasField("seed")
    assert decoded[2].end.finish_reason == pb.FINISH_REASON_LENGTH


def _all_enums() -> list[EnumDescriptor]:
    enums = list(pb.DESCRIPTOR.enum_types_by_name.values())
    pending = list(pb.DESCRIPTOR.message_types_by_name.values())
    while pending:
        message = pending.pop()
        enums.extend(message.enum_types)
        pending.extend(message.nested_types)
    return enums


def test_enums_have_unspecified_zero_values() -> None:
    enums = _all_enums()
    assert {e.name for e in enums} >= {"CacheMode", "CacheStatus", "FinishReason"}
    for enum in enums:
        zero = enum.values_by_number[0]
        prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_")
        assert zero.name == f"{prefix}_UNSPECIFIED", enum.full_name
        assert all(value.name.startswith(prefix + "_") for value in enum.values), enum.full_name
    assert pb.End().finish_reason == pb.FINISH_REASON_UNSPECIFIED == 0
    assert pb.CacheControl().mode == pb.CACHE_MODE_UNSPECIFIED == 0
    assert pb.Start().cache_status == pb.CACHE_STATUS_UNSPECIFIED == 0


def test_protoset_holds_the_service_as_generated() -> None:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(PROTOSET.read_bytes())
    files = {f.name: f for f in descriptor_set.file}
    assert "streamgate/v1/generation.proto" in files
    generated = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(generated)
    shipped = files["streamgate/v1/generation.proto"]
    # The protoset also has comments (for `grpcurl describe`) and protoc's derived json_names.
    shipped.ClearField("source_code_info")
    pending = list(shipped.message_type)
    while pending:
        message = pending.pop()
        pending.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    assert shipped == generated
    # Every import is in the set, as ghz --protoset and grpcurl -protoset need.
    for file in descriptor_set.file:
        assert set(file.dependency) <= set(files), file.name
    services = {f"{f.package}.{s.name}" for f in descriptor_set.file for s in f.service}
    assert SERVICE in services
