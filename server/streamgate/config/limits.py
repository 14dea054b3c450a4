"""`limits`: per-request limits, and the timing of streams, retries and shutdown."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from streamgate.config.base import Seconds, Section

__all__ = ["LimitsConfig"]


class LimitsConfig(Section):
    """Per-request limits and the timing of streams and shutdown."""

    stream_buffer_events: Annotated[int, Field(ge=1)] = 256
    """Backend events buffered per stream while the client reads slower than they arrive
    (merged into one Delta when the client catches up)."""
    stall_timeout_seconds: Seconds = 30.0
    """A client that takes nothing for this long with the buffer full: the backend stream is
    cancelled and the call ends with RESOURCE_EXHAUSTED (CLIENT_TOO_SLOW)."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30.0
    """On SIGTERM/SIGINT, running streams may finish within this; then they are cancelled."""
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    """Backends tried per request (another one only before the first token, for retryable
    failures: overloaded, unavailable)."""
    retry_backoff_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.02
    retry_backoff_max_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    """Wait before attempt n+1: backoff * 2^(n-1), at most the max, times a random 0.5-1
    (jitter), and never past the caller's deadline."""
    max_prompt_chars: Annotated[int, Field(ge=1)] | None = None
    """Longest prompt (after the chat template) in characters; null: listen.max_message_bytes."""
    max_stop_sequences: Annotated[int, Field(ge=0)] = 4
    """Used when a backend's /info does not say."""
    max_top_n_tokens: Annotated[int, Field(ge=0)] = 5
    max_cache_ttl_seconds: Annotated[int, Field(ge=0)] = 86400
