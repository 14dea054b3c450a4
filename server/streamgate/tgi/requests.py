"""TGI's request bodies (`GenerateRequest`, `CompatGenerateRequest`), parsed strictly.

What a server (the engine) does with a body: `parse_request` turns it into a frozen model, or
raises `RequestParseError` with one readable message (TGI answers 422 from its JSON extractor).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from streamgate.tgi.parameters import STRICT, GenerateParameters

__all__ = ["CompatGenerateRequest", "GenerateRequest", "RequestParseError", "parse_request"]


class GenerateRequest(BaseModel):
    """Body of `POST /generate`, `POST /generate_stream` and `POST /tokenize`."""

    model_config = STRICT

    inputs: str
    parameters: GenerateParameters | None = None
    # TGI ignores unknown top-level keys; clients commonly send `stream` to these routes, so it
    # is accepted (and ignored: the route decides) rather than rejected like other unknown keys.
    stream: bool | None = None

    @property
    def params(self) -> GenerateParameters:
        """The parameters, defaulted when absent or null."""
        return self.parameters or _DEFAULTS


class CompatGenerateRequest(GenerateRequest):
    """Body of `POST /`: the same fields, where `stream` chooses JSON or SSE."""


_DEFAULTS = GenerateParameters()

Request = TypeVar("Request", bound=GenerateRequest)


class RequestParseError(ValueError):
    """The body is not JSON or does not match the request schema (TGI: 422 from its extractor)."""


def parse_request(model: type[Request], body: bytes) -> Request:
    """Parse a JSON body into `model`, with one readable message on failure."""
    try:
        return model.model_validate_json(body)
    except PydanticValidationError as err:
        raise RequestParseError(_describe(err)) from None


def _describe(err: PydanticValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "Failed to deserialize the JSON body into the target type: " + "; ".join(parts)
