"""`embedded`: the engine the gateway starts and serves itself when no backends are configured."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from streamgate.config.base import Name, Seconds, Section

__all__ = ["EMBEDDED_BACKEND", "EmbeddedConfig"]

EMBEDDED_BACKEND = "embedded"
"""The backend name of the embedded engine (routes may name it when no backends are given)."""


class EmbeddedConfig(Section):
    """The engine started as a child process when no backends are configured."""

    model: str = "tiny"
    route: Name = "tiny"
    """Name of the route served by the embedded engine when no routes are given."""
    args: list[str] = Field(default_factory=list)
    """Extra `streamgate engine` flags, e.g. ["--max-total-tokens", "1024"]."""
    startup_timeout_seconds: Seconds = 180.0
    stop_timeout_seconds: Seconds = 10.0
    """SIGTERM, then SIGKILL after this."""
    max_new_tokens: Annotated[int, Field(ge=1)] | None = 256
    """Default max_new_tokens of the embedded route."""

    @field_validator("args")
    @classmethod
    def _no_owned_flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in ("--host", "--port", "--model"):
                raise ValueError(f"{flag} is set by the gateway (use embedded.model)")
        return value
