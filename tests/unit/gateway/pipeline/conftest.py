"""Fixtures of the in-process pipeline tests: the fake TGI served by the test's event loop and
a real pipeline over it (support/pipelines.py)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from streamgate.gateway.pipeline import s09_relay
from support.fake import LocalFake, serve_fake
from support.fake_tgi import Behaviour
from support.pipelines import InProcessGateway, pipeline_config, start_pipeline


@pytest.fixture
def per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """One Delta per backend step however late the test reads (a loaded machine may pause it
    for longer than MERGE_AFTER_SECONDS): merging is the relay's own tests' business."""
    monkeypatch.setattr(s09_relay, "MERGE_AFTER_SECONDS", math.inf)


@pytest.fixture
async def fake() -> AsyncIterator[LocalFake]:
    """A fake TGI that streams its tokens without delay unless a prompt says otherwise."""
    async with serve_fake(Behaviour()) as served:
        yield served


@pytest.fixture
async def gw(fake: LocalFake, per_step: None) -> AsyncIterator[InProcessGateway]:
    """A pipeline whose one route (`fake`) is served by `fake`."""
    async with start_pipeline(pipeline_config(fake.url)) as gateway:
        yield gateway
