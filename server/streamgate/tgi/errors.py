"""TGI's errors: the `{"error", "error_type"}` body and what a client makes of it.

A server answers a failed non-stream request with that body and HTTP 422 (validation), 424
(generation) or 429 (overloaded); a failed stream ends with it as its last event (after HTTP
200). A client classifies an error by its `error_type` first and, when it has none it knows
(a proxy's answer, an older TGI), by the HTTP status, as the official client does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, Literal, TypedDict

__all__ = [
    "ErrorJSON",
    "ErrorKind",
    "ErrorType",
    "error_json",
    "error_kind",
    "excerpt",
    "parse_error_body",
]

ErrorType = Literal[
    "validation",
    "overloaded",
    "generation",
    "incomplete_generation",
    "incomplete_generation_stream",
    "healthcheck",
]
"""The `error_type` values a server of ours sends (a subset of TGI's)."""

ErrorKind = Literal["overloaded", "validation", "generation", "unavailable"]
"""What a TGI error means to a client: the server is full, the request is wrong, generating it
failed, or the server (or what stands in front of it) cannot serve at all."""

# TGI's `InferError::error_type()` values (router/src/infer/mod.rs) and what they mean here.
_KIND_BY_ERROR_TYPE: Final[Mapping[str, ErrorKind]] = {
    "overloaded": "overloaded",
    "validation": "validation",
    "template_error": "validation",
    "missing_template_variable": "validation",
    "tool_error": "validation",
    "generation": "generation",
    "incomplete_generation": "generation",
    "incomplete_generation_stream": "generation",
    "stream_serialization_error": "generation",
}


class ErrorJSON(TypedDict):
    """TGI `ErrorResponse`."""

    error: str
    error_type: str


def error_json(message: str, error_type: ErrorType) -> ErrorJSON:
    """TGI `ErrorResponse`."""
    return {"error": message, "error_type": error_type}


def error_kind(error_type: str | None, status: int | None = None) -> ErrorKind:
    """Classify an error: by its `error_type` when TGI's, else by the HTTP `status` of a
    non-200 answer; an in-stream error (`status` None) of an unknown type is `generation`."""
    kind = _KIND_BY_ERROR_TYPE.get(error_type or "")
    if kind is not None:
        return kind
    if status is None:
        return "generation"
    if status == 429:
        return "overloaded"
    if status in (400, 413, 422):
        return "validation"
    if status == 424:
        return "generation"
    return "unavailable"  # 5xx, and 4xx a proxy or a misconfigured URL gives (401, 403, 404, ...)


def parse_error_body(raw: bytes | str) -> tuple[str, str | None] | None:
    """The message and `error_type` of a TGI error body, or None if it is not one. Lenient:
    `error_type` may be missing, and other keys are ignored."""
    try:
        obj = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    if not isinstance(obj, dict) or "error" not in obj:
        return None
    error_type = obj.get("error_type")
    return str(obj["error"]), error_type if isinstance(error_type, str) else None


def excerpt(raw: bytes | str, limit: int = 200) -> str:
    """The start of a body or event that could not be read, for an error message."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= limit else text[:limit] + "..."
