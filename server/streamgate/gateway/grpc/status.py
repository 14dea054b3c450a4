"""A `GatewayError` as the gRPC status of a call: its code, message and google.rpc details in
`grpc-status-details-bin` (grpcio-status), with the request id and the call's trailing metadata
beside them."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2

# No stubs for googleapis-common-protos in the environment; `unused-ignore` keeps this valid
# once they are installed.
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from streamgate.gateway.pipeline.errors import Code, GatewayError
from streamgate.gateway.pipeline.s01_call import Call

__all__ = ["RichStatus", "grpc_code", "rich_status"]


def grpc_code(code: Code) -> grpc.StatusCode:
    """gRPC's status code of the same name."""
    return grpc.StatusCode[code.name]


@dataclass(frozen=True)
class RichStatus(grpc.Status):
    """A `grpc.Status` with our trailing metadata next to `grpc-status-details-bin`."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def rich_status(error: GatewayError, call: Call) -> RichStatus:
    """The status of `call` failing with `error`; `x-request-id` and the call's trailing
    metadata (its remaining quota) are in the trailing metadata too."""
    record = call.record
    backend = record.origin.backend if record.origin else None
    proto = status_pb2.Status(code=error.code.value, message=error.message)
    for detail in error.details(
        request_id=call.request_id,
        route=record.route.name if record.route else None,
        backend=backend,
        tokens_sent=call.tokens_sent() if backend else None,
    ):
        packed = any_pb2.Any()
        packed.Pack(detail)
        proto.details.append(packed)
    status = rpc_status.to_status(proto)
    return RichStatus(
        code=status.code,
        details=status.details,
        trailing_metadata=(
            *status.trailing_metadata,
            ("x-request-id", call.request_id),
            *call.trailing,
        ),
    )
