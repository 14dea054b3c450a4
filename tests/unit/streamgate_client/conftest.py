"""Fixtures of the Python client's tests: the stub GenerationService (tests/support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support.processes import free_port
from support.stub_generation import Stub, serve_stub


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    """A stub GenerationService on a free loopback port, for one test."""
    async with serve_stub() as served:
        yield served


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on: an unreachable gateway."""
    return free_port()
