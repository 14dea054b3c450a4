"""The fake TGI's pacing for load tests (support/fake_tgi.py): a first-token wait apart from
the inter-token one, a step clock shared by every stream, and TGI's load gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from support import fake_tgi
from support.fake import LocalFake, serve_fake
from support.processes import wait_until


async def token_times(session: aiohttp.ClientSession, url: str, prompt: str) -> list[float]:
    """When each token event of one stream arrived (time.monotonic)."""
    times = []
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 4}}
    async with session.post(url + "/generate_stream", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data:"):
                times.append(time.monotonic())
    return times


@pytest.fixture
async def fake() -> AsyncIterator[LocalFake]:
    async with serve_fake() as served:
        yield served


async def test_the_first_token_waits_ttft_and_the_others_delay(fake: LocalFake) -> None:
    async with aiohttp.ClientSession() as session:
        sent = time.monotonic()
        times = await token_times(session, fake.url, "mode:normal ttft=0.3 delay=0.001")
    assert len(times) == 4
    assert times[0] - sent >= 0.3  # lower bounds only: a slow machine only adds
    # Without ttft the first token waits `delay` like the rest (the old behaviour).
    async with aiohttp.ClientSession() as session:
        sent = time.monotonic()
        times = await token_times(session, fake.url, "mode:normal delay=0.1")
    assert times[0] - sent >= 0.1 and times[-1] - sent >= 0.4


def on_a_step(t: float, step: float) -> bool:
    return abs(t / step - round(t / step)) < 1e-6


def test_lockstep_tokens_fall_on_step_boundaries_and_a_late_stream_skips_to_the_next() -> None:
    step = 0.02
    now = time.monotonic()
    first = fake_tgi._next_step(now, 0.05, step)  # the first step at least TTFT away
    assert now + 0.05 <= first < now + 0.05 + step and on_a_step(first, step)
    assert fake_tgi._next_step(first, step, step) == pytest.approx(first + step)
    late = fake_tgi._next_step(now - 1.0, step, step)  # its step is long past
    assert now <= late <= time.monotonic() + step and on_a_step(late, step)


def test_ttft_and_lockstep_are_read_from_the_prompt() -> None:
    b = fake_tgi.Behaviour().override("mode:normal ttft=0.1 lockstep=1 delay=0.02")
    assert (b.ttft, b.lockstep, b.delay) == (0.1, True, 0.02)
    assert fake_tgi.Behaviour().ttft is None


async def test_metrics_report_the_streams_in_flight(fake: LocalFake) -> None:
    async with aiohttp.ClientSession() as session:

        async def gauge() -> float:
            async with session.get(fake.url + "/metrics") as resp:
                lines = (await resp.text()).splitlines()
            return float(
                next(x for x in lines if x.startswith("tgi_batch_current_size ")).split()[1]
            )

        assert await gauge() == 0
        hanging = [
            asyncio.create_task(token_times(session, fake.url, "mode:hang")) for _ in range(3)
        ]
        await wait_until(lambda: fake.stats.active == 3, "three streams in flight")
        assert await gauge() == 3
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
        await wait_until(lambda: fake.stats.active == 0, "the streams to end")
        assert await gauge() == 0
        assert fake.stats.disconnects == 3
