"""TGI's wire protocol (TGI v3.3), defined once for both sides of it.

The engine's HTTP layer (a TGI server) and the backend adapter (a TGI client) both import it:
strict where a server reads (requests), lenient where a client reads (events, error bodies),
cheap where a server writes (one event per generated token).

- `parameters`: `GenerateParameters`, built by the gateway, sent by the adapter, parsed by the
  engine
- `requests`: the request bodies and their strict parsing
- `events`: stream events (`StreamEvent`, `Token`, `StreamDetails`, `StreamError`): decoding
  and JSON
- `responses`: non-stream answers (`GenerateResponse`, `Details`, `/tokenize`)
- `errors`: `{"error", "error_type"}`, TGI's error types and how a client classifies them
- `sse`: `data:` framing and keep-alives, and the incremental SSE parser
- `serde`: JSON written the way TGI writes it
"""

from streamgate.tgi.errors import (
    ErrorJSON,
    ErrorKind,
    ErrorType,
    error_json,
    error_kind,
    excerpt,
    parse_error_body,
)
from streamgate.tgi.events import (
    StreamDetails,
    StreamDetailsJSON,
    StreamError,
    StreamEvent,
    StreamResponseJSON,
    Token,
    TokenFields,
    TokenJSON,
    parse_stream_event,
    stream_details_json,
    stream_response_json,
    token_json,
)
from streamgate.tgi.parameters import GenerateParameters
from streamgate.tgi.requests import (
    CompatGenerateRequest,
    GenerateRequest,
    RequestParseError,
    parse_request,
)
from streamgate.tgi.responses import (
    best_of_sequence_json,
    details_json,
    generate_response_json,
    prefill_token_json,
    simple_tokens_json,
)
from streamgate.tgi.serde import dumps
from streamgate.tgi.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    SSE_HEADERS,
    SSE_KEEP_ALIVE,
    SSEError,
    SSEParser,
    sse_event,
)

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSE_HEADERS",
    "SSE_KEEP_ALIVE",
    "CompatGenerateRequest",
    "ErrorJSON",
    "ErrorKind",
    "ErrorType",
    "GenerateParameters",
    "GenerateRequest",
    "RequestParseError",
    "SSEError",
    "SSEParser",
    "StreamDetails",
    "StreamDetailsJSON",
    "StreamError",
    "StreamEvent",
    "StreamResponseJSON",
    "Token",
    "TokenFields",
    "TokenJSON",
    "best_of_sequence_json",
    "details_json",
    "dumps",
    "error_json",
    "error_kind",
    "excerpt",
    "generate_response_json",
    "parse_error_body",
    "parse_request",
    "parse_stream_event",
    "prefill_token_json",
    "simple_tokens_json",
    "sse_event",
    "stream_details_json",
    "stream_response_json",
    "token_json",
]
