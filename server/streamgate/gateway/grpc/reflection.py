"""gRPC server reflection, v1 and v1alpha, that also resolves method symbols.

grpcio-reflection serves only `grpc.reflection.v1alpha`, while newer clients (grpcurl >= 1.9,
Postman, ...) ask `grpc.reflection.v1` first. Its symbol lookup is `DescriptorPool.
FindFileContainingSymbol`, which knows services but not their methods: ghz asks for
`streamgate.v1.GenerationService.GenerateStream` and fails with "Symbol not found" (ghz issue 419).

This module answers both protocol versions with one small servicer. The two `reflection.proto`
files differ only in their package name (same messages, field numbers and types), so both services
(de)serialize with grpcio-reflection's v1alpha message classes: the bytes on the wire are
identical. A v1 descriptor, derived from v1alpha's by renaming the package, is kept in a private
pool only so that reflection can describe the v1 service itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2 as _pb

__all__ = [
    "V1ALPHA_SERVICE_NAME",
    "V1_FILE",
    "V1_SERVICE_NAME",
    "ReflectionServicer",
    "enable_reflection",
    "find_file_containing_symbol",
]

_V1ALPHA_PACKAGE = _pb.DESCRIPTOR.package  # grpc.reflection.v1alpha
_V1_PACKAGE = "grpc.reflection.v1"
V1ALPHA_SERVICE_NAME = f"{_V1ALPHA_PACKAGE}.ServerReflection"
V1_SERVICE_NAME = f"{_V1_PACKAGE}.ServerReflection"
_METHOD = "ServerReflectionInfo"

_Request = _pb.ServerReflectionRequest
_Response = _pb.ServerReflectionResponse


def _derive_v1_file() -> FileDescriptor:
    """Build `grpc/reflection/v1/reflection.proto` from grpcio-reflection's v1alpha descriptor."""
    proto = descriptor_pb2.FileDescriptorProto()
    _pb.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1_PACKAGE
    # v1alpha's options mark the file deprecated and name v1alpha's Java/Go packages.
    proto.ClearField("options")
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."

    def rename(type_name: str) -> str:
        return new + type_name.removeprefix(old) if type_name.startswith(old) else type_name

    def rename_fields(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            # Only message/enum fields have a type_name; setting "" on a scalar would mark it
            # present (descriptor.proto is proto2) and make the file invalid.
            if field.HasField("type_name"):
                field.type_name = rename(field.type_name)
        for nested in message.nested_type:
            rename_fields(nested)

    for message in proto.message_type:
        rename_fields(message)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    # A private pool: the default one may one day get the official v1 file from a library, and
    # two different files of the same name in one pool is an error. Adding fails loudly if a
    # reference to a v1alpha type was missed (that type is not in this pool).
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(proto.name)


V1_FILE: FileDescriptor = _derive_v1_file()
"""Descriptor of `grpc.reflection.v1` (lives in its own DescriptorPool, `V1_FILE.pool`)."""


def find_file_containing_symbol(pool: DescriptorPool, symbol: str) -> FileDescriptor | None:
    """Return the file that declares `symbol`, or None.

    Besides what `pool.FindFileContainingSymbol` knows (upb: packages' top-level and nested
    types, services, fields, enum values), this resolves a member through its parent: a method
    through its service, and a field, oneof, nested type or enum value through its message (the
    pure-Python pool does not index all of those). The member must exist: a wrong method name
    is not found rather than answered with the service's file.
    """
    try:
        return pool.FindFileContainingSymbol(symbol)
    except KeyError:
        pass
    parent, _, member = symbol.rpartition(".")
    if not parent:
        return None
    try:
        service = pool.FindServiceByName(parent)
    except KeyError:
        pass
    else:
        return service.file if member in service.methods_by_name else None
    try:
        message: Descriptor = pool.FindMessageTypeByName(parent)
    except KeyError:
        return None
    scopes: tuple[Iterable[str], ...] = (
        message.fields_by_name,
        message.oneofs_by_name,
        message.nested_types_by_name,
        message.enum_types_by_name,
        message.enum_values_by_name,
        message.extensions_by_name,
    )
    return message.file if any(member in scope for scope in scopes) else None


def _with_dependencies(file: FileDescriptor) -> list[bytes]:
    """The serialized file first, then its transitive imports (each once)."""
    seen: dict[str, FileDescriptor] = {}
    pending = [file]
    while pending:
        current = pending.pop()
        if current.name in seen:
            continue
        seen[current.name] = current
        pending.extend(current.dependencies)
    serialized = []
    for descriptor in seen.values():
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        serialized.append(proto.SerializeToString())
    return serialized


def _error(code: grpc.StatusCode, message: str) -> _pb.ErrorResponse:
    return _pb.ErrorResponse(error_code=code.value[0], error_message=message)


class ReflectionServicer:
    """Answers `ServerReflectionInfo` streams of both v1 and v1alpha clients.

    Lookups go to the server's pool (the default one unless given) and then to the pool of the
    derived v1 reflection file.
    """

    def __init__(self, service_names: Iterable[str], pool: DescriptorPool | None = None) -> None:
        """`service_names`: the services to list; the two reflection services are added."""
        names = {*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME}
        self._service_names = sorted(names)
        server_pool = descriptor_pool.Default() if pool is None else pool
        self._pools = (server_pool, V1_FILE.pool)

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterator[_Request],
        context: grpc.aio.ServicerContext[_Request, _Response],
    ) -> AsyncIterator[_Response]:
        """One response per request, in order, as the reflection protocol requires."""
        async for request in request_iterator:
            yield self.answer(request)

    def answer(self, request: _Request) -> _Response:
        """The response to one reflection request (errors are in-band `error_response`s)."""
        response = _Response(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            response.list_services_response.service.extend(
                _pb.ServiceResponse(name=name) for name in self._service_names
            )
            return response
        if kind == "all_extension_numbers_of_type":
            name = request.all_extension_numbers_of_type
            for pool in self._pools:
                try:
                    message = pool.FindMessageTypeByName(name)
                except KeyError:
                    continue
                numbers = sorted(ext.number for ext in pool.FindAllExtensions(message))
                response.all_extension_numbers_response.base_type_name = message.full_name
                response.all_extension_numbers_response.extension_number.extend(numbers)
                return response
            response.error_response.CopyFrom(_error(grpc.StatusCode.NOT_FOUND, f"type {name}"))
            return response
        if kind in ("file_by_filename", "file_containing_symbol", "file_containing_extension"):
            file = next(filter(None, (_find_file(pool, request) for pool in self._pools)), None)
            if file is None:
                wanted = getattr(request, kind)
                if kind == "file_containing_extension":
                    wanted = f"{wanted.containing_type} extension {wanted.extension_number}"
                response.error_response.CopyFrom(
                    _error(grpc.StatusCode.NOT_FOUND, f"{kind} not found: {wanted}")
                )
            else:
                response.file_descriptor_response.file_descriptor_proto.extend(
                    _with_dependencies(file)
                )
            return response
        response.error_response.CopyFrom(
            _error(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported request: {kind}")
        )
        return response


def _find_file(pool: DescriptorPool, request: _Request) -> FileDescriptor | None:
    """The file a file_by_filename/file_containing_symbol/file_containing_extension asks for."""
    try:
        if request.HasField("file_by_filename"):
            return pool.FindFileByName(request.file_by_filename)
        if request.HasField("file_containing_symbol"):
            return find_file_containing_symbol(pool, request.file_containing_symbol)
        wanted = request.file_containing_extension
        message = pool.FindMessageTypeByName(wanted.containing_type)
        extension = pool.FindExtensionByNumber(message, wanted.extension_number)
        return pool.FindFileContainingSymbol(extension.full_name)
    except KeyError:
        return None


def enable_reflection(
    server: grpc.aio.Server,
    service_names: Sequence[str],
    *,
    pool: DescriptorPool | None = None,
) -> None:
    """Serve `grpc.reflection.v1.ServerReflection` and `grpc.reflection.v1alpha.ServerReflection`.

    `service_names` are the fully qualified names to list (e.g. `streamgate.v1.GenerationService`,
    `grpc.health.v1.Health`); the reflection services list themselves. Descriptors come from
    `pool`, by default the default pool into which generated `*_pb2` modules register, so the
    modules of every listed service must have been imported. Call before `server.start()`.
    """
    servicer = ReflectionServicer(service_names, pool)
    handlers = {
        _METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=_Request.FromString,
            response_serializer=_Response.SerializeToString,
        )
    }
    for service in (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME):
        # Both registrations, as grpcio-tools' generated add_*_to_server does: registered
        # handlers are the fast path, the generic one serves whatever is not matched by path.
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
