"""`logging` and `metrics`: structured logs on stderr and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from streamgate.config.base import Port, Section

__all__ = ["LoggingConfig", "MetricsConfig"]


class LoggingConfig(Section):
    """structlog output on stderr: one line per request, plus events."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(True, alias="json")
    """JSON lines (true) or human-readable console output (false)."""
    log_prompts: bool = False
    """Include prompt text in request lines (off: prompts may be personal data)."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(Section):
    """Prometheus metrics over HTTP (`GET /metrics`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9464
