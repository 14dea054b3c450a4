"""Backends the gateway streams from: TGI (a real fleet or `streamgate engine`) over HTTP/SSE.

`TGIBackend` is the adapter; `BackendError` every way a call to it can fail. The wire types its
API takes and yields (`GenerateParameters`, `StreamEvent`, `Token`, `StreamDetails`) are
`streamgate.tgi`'s, re-exported here.
"""

from streamgate.backends.errors import BackendError, BackendErrorKind
from streamgate.backends.tgi import BackendInfo, TGIBackend
from streamgate.tgi import GenerateParameters, StreamDetails, StreamEvent, Token

__all__ = [
    "BackendError",
    "BackendErrorKind",
    "BackendInfo",
    "GenerateParameters",
    "StreamDetails",
    "StreamEvent",
    "TGIBackend",
    "Token",
]
