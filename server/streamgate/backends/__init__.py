"""Backends the gateway streams from: TGI (a real fleet or `streamgate engine`) over HTTP/SSE."""

from streamgate.backends.tgi import (
    BackendError,
    BackendErrorKind,
    BackendInfo,
    StreamDetails,
    StreamError,
    StreamEvent,
    TGIBackend,
    TGIParameters,
    TGIStream,
    Token,
)

__all__ = [
    "BackendError",
    "BackendErrorKind",
    "BackendInfo",
    "StreamDetails",
    "StreamError",
    "StreamEvent",
    "TGIBackend",
    "TGIParameters",
    "TGIStream",
    "Token",
]
