"""A `GatewayError` as the browser door's error: the Connect code of the same name (lower case,
CANCELLED spelled `canceled`), the message, and the google.rpc details of the gRPC door, each as
Connect sends it (`{"type": "google.rpc.RetryInfo", "value": <base64>}`); the Connect runtime
carries them in every protocol (Connect JSON and binary, gRPC-Web)."""

from __future__ import annotations

import base64
from typing import Any

from connectrpc.code import Code as ConnectCode
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import json_format
from protobuf.wkt import Any as AnyDetail

from streamgate.gateway.pipeline.errors import Code, GatewayError
from streamgate.gateway.pipeline.s01_call import Call

__all__ = ["connect_code", "connect_error", "error_json", "gateway_code", "http_status"]

_TYPE_URL = "type.googleapis.com/"
_CONNECT_NAME = {Code.CANCELLED: ConnectCode.CANCELED}
_GATEWAY_CODE = {connect: code for code, connect in _CONNECT_NAME.items()}
# The HTTP status of an error answered before any message (Connect's table).
_HTTP_STATUS = {
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.UNAUTHENTICATED: 401,
}


def connect_code(code: Code) -> ConnectCode:
    """The Connect code of `code`."""
    return _CONNECT_NAME.get(code) or ConnectCode[code.name]


def http_status(code: Code) -> int:
    """The HTTP status Connect gives an error with `code` (200 for OK)."""
    return _HTTP_STATUS.get(code, 200)


def gateway_code(error: ConnectError) -> Code:
    """The gateway's code for an error the Connect runtime raised itself (a client that left, a
    deadline, a request it could not read); INTERNAL for codes the gateway never answers."""
    code = _GATEWAY_CODE.get(error.code) or Code.__members__.get(error.code.name)
    return code or Code.INTERNAL


def _details(error: GatewayError, call: Call) -> list[Any]:
    """The google.rpc details of `error` in `call` (what the gRPC door packs too)."""
    record = call.record
    backend = record.origin.backend if record.origin else None
    return error.details(
        request_id=call.request_id,
        route=record.route.name if record.route else None,
        backend=backend,
        tokens_sent=call.tokens_sent() if backend else None,
    )


def connect_error(error: GatewayError, call: Call) -> ConnectError:
    """`error` as the Connect runtime sends it, with its details."""
    details = [
        ErrorDetail(
            AnyDetail(
                type_url=_TYPE_URL + detail.DESCRIPTOR.full_name,
                value=detail.SerializeToString(),
            )
        )
        for detail in _details(error, call)
    ]
    return ConnectError(connect_code(error.code), error.message, details)


def error_json(error: GatewayError, call: Call) -> dict[str, Any]:
    """`error` as Connect's JSON error object (`code`, `message`, `details`), each detail also
    readable as `debug` JSON (the JSON lines of curl)."""
    return {
        "code": connect_code(error.code).value,
        "message": error.message,
        "details": [
            {
                "type": detail.DESCRIPTOR.full_name,
                # Connect writes base64 without padding.
                "value": base64.b64encode(detail.SerializeToString()).decode().rstrip("="),
                "debug": json_format.MessageToDict(detail),
            }
            for detail in _details(error, call)
        ],
    }
