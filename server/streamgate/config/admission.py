"""`admission`: the gateway-wide bound on upstream streams and the queue in front of it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from streamgate.config.base import PositiveInt, Seconds, Section

__all__ = ["AdmissionConfig"]


class AdmissionConfig(Section):
    """The gateway-wide bound on upstream streams and the queue in front of it."""

    max_active_streams: PositiveInt = 256
    """Streams to backends at once; more requests wait in the queue."""
    max_queued: Annotated[int, Field(ge=0)] = 1024
    """Requests waiting at once; beyond it: RESOURCE_EXHAUSTED (QUEUE_FULL)."""
    max_queue_wait_seconds: Seconds = 30.0
    """Longest wait (the caller's deadline may cut it shorter): RESOURCE_EXHAUSTED."""
