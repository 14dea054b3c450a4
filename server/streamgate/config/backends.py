"""`backends`: the TGI replicas (address, connection pool, timeouts, health checks, circuit)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from streamgate.config.base import Name, Seconds, Section

__all__ = ["BackendConfig", "CircuitConfig"]


class CircuitConfig(Section):
    """Passive ejection: failed requests open a backend's circuit (routing/circuit.py)."""

    failures: Annotated[int, Field(ge=1)] = 5
    """Consecutive failed requests (unreachable, timeout, broken stream) that open it."""
    open_seconds: Seconds = 5.0
    """No requests for this long; then one probe request decides."""
    max_open_seconds: Seconds = 60.0
    """A failed probe doubles the time, up to this."""


class BackendConfig(Section):
    """One TGI backend (a replica)."""

    name: Name
    url: str
    model: str | None = None
    """The model id shown to clients; default: the backend's /info model_id."""
    max_connections: Annotated[int, Field(ge=1)] = 256
    """Pooled HTTP connections, i.e. streams in flight to this backend."""
    connect_timeout_seconds: Seconds = 5.0
    idle_timeout_seconds: Seconds | None = 60.0
    """Longest silence within a stream (TGI sends keep-alives every 15 s); null: no bound."""
    request_timeout_seconds: Seconds = 30.0
    """Bound on /info and /tokenize."""
    health_timeout_seconds: Seconds = 2.0
    health_interval_seconds: Seconds = 2.0
    """Time between two /health checks."""
    load_interval_seconds: Seconds = 1.0
    """Time between two reads of its /metrics load gauges (queue, batch) for the pickers."""
    health_rise: Annotated[int, Field(ge=1)] = 2
    health_fall: Annotated[int, Field(ge=1)] = 2
    """Consecutive passed (failed) checks that make a down (up) backend healthy (unhealthy);
    the first check decides alone."""
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    draining: bool = False
    """Send it no new requests; running ones finish (apply with a reload: SIGHUP)."""
    count_prompt_tokens: bool = False
    """Ask POST /tokenize, in parallel with each generation, for Start.input_tokens. Off by
    default: it doubles the requests (and the tokenizing) a backend serves, which costs time to
    first token under load; Start.input_tokens is then 0, End's usage has the count anyway."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as err:
            raise ValueError(f"bad port: {err}") from None
        return value.rstrip("/")
