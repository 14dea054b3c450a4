"""The TGI adapter against the real engine and against the fault-injecting fake TGI.

Both servers run as their own processes on loopback. Timeouts in these tests are bounds on
waiting, never assertions about how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import pytest

from streamgate.backends import BackendError, GenerateParameters, StreamEvent, TGIBackend
from support.engines import Engine
from support.fake import Fake
from support.processes import free_port

WAIT_TIMEOUT = 30.0  # bound on polling a server's counters


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def fake_backend(fake: Fake) -> AsyncIterator[TGIBackend]:
    async with TGIBackend.for_url(fake.url, name="fake", idle_timeout_seconds=10.0) as backend:
        yield backend


@pytest.fixture
async def engine_backend(engine: Engine) -> AsyncIterator[TGIBackend]:
    async with TGIBackend.for_url(engine.url, name="engine") as backend:
        yield backend


async def poll(predicate: Callable[[], bool], what: str) -> None:
    """Poll a server's counters until `predicate()` holds; fail after WAIT_TIMEOUT."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


Stream = AsyncGenerator[StreamEvent, None]


async def collect(stream: Stream) -> list[StreamEvent]:
    return [event async for event in stream]


async def fail(stream: Stream) -> tuple[list[StreamEvent], BackendError]:
    """Read a stream that must fail: the events before the error, and the error."""
    events: list[StreamEvent] = []
    with pytest.raises(BackendError) as caught:
        async for event in stream:
            events.append(event)
    return events, caught.value


async def read_two_then_close(make: Callable[[], Stream], how: str) -> None:
    """Read two events of the stream `make()` opens, then leave it the way `how` says:
    `aclosing` (break out of a loop inside `contextlib.aclosing`), `aclose`, `cancel` (the
    consuming task is cancelled while it waits for the next event), `handoff` (the gateway's
    shape: the first event read in one task, the rest in a reader task, which a third task
    cancels before it closes the stream)."""
    if how == "aclosing":
        n = 0
        async with contextlib.aclosing(make()) as stream:
            async for _ in stream:
                n += 1
                if n == 2:
                    break
        return
    stream = make()
    if how == "aclose":
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        return
    if how == "handoff":
        await asyncio.ensure_future(anext(stream))
    two = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            if event.index == 2:
                two.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(two.wait(), WAIT_TIMEOUT)
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:

        async def close() -> None:
            task.cancel()
            await asyncio.wait({task})
            await stream.aclose()

        await asyncio.wait_for(asyncio.ensure_future(close()), WAIT_TIMEOUT)


# ---- the real engine ------------------------------------------------------------------------


async def test_engine_stream_tokens_and_details(engine: Engine, engine_backend: TGIBackend) -> None:
    params = GenerateParameters(max_new_tokens=12)
    events = await collect(engine_backend.generate_stream("Hello", params, request_id="r-1"))
    assert events and [e.index for e in events] == list(range(1, len(events) + 1))
    assert all(not e.final for e in events[:-1])
    last = events[-1]
    assert last.final and last.details is not None
    assert last.details.generated_tokens == len(events)
    assert last.details.finish_reason in ("length", "eos_token")
    assert last.details.input_length == len(engine.tokenize("Hello"))
    assert last.generated_text == "".join(e.token.text for e in events if not e.token.special)
    # The same greedy request, not streamed: the same text.
    status, _, body = engine.post(
        "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 12}}
    )
    assert status == 200 and body["generated_text"] == last.generated_text


async def test_engine_sampling_seed_and_top_tokens(engine_backend: TGIBackend) -> None:
    params = GenerateParameters(do_sample=True, seed=42, top_n_tokens=2, max_new_tokens=5)
    first = await collect(engine_backend.generate_stream("The weather", params))
    second = await collect(engine_backend.generate_stream("The weather", params))
    last = first[-1]
    assert last.details is not None and last.details.seed == 42
    assert all(len(e.top_tokens) == 2 for e in first)
    assert [e.token.id for e in first] == [e.token.id for e in second]


async def test_engine_info_health_tokenize(engine: Engine, engine_backend: TGIBackend) -> None:
    info = await engine_backend.info()
    raw = engine.info()
    assert info.model_id == raw["model_id"] and info.model_sha == raw["model_sha"]
    assert (info.max_input_tokens, info.max_total_tokens) == (256, 512)
    assert info.max_concurrent_requests == raw["max_concurrent_requests"]
    assert info.max_stop_sequences == raw["max_stop_sequences"]
    assert await engine_backend.health()
    assert await engine_backend.tokenize("Hello there") == len(engine.tokenize("Hello there"))


async def test_engine_validation_error(engine_backend: TGIBackend) -> None:
    stream = engine_backend.generate_stream("Hello", GenerateParameters(temperature=-1.0))
    events, err = await fail(stream)
    assert not events
    assert (err.kind, err.retryable, err.tokens_received) == ("validation", False, 0)
    assert err.error_type == "validation" and "temperature" in err.message
    assert err.backend == "engine"


@pytest.mark.parametrize("how", ["aclosing", "aclose", "cancel", "handoff"])
async def test_engine_cancel_drops_the_sequence(
    engine: Engine, engine_backend: TGIBackend, how: str
) -> None:
    prompt = engine.long_running_prompt(400)
    key = 'tgi_request_failure{err="dropped"}'
    before = engine.metrics().get(key, 0.0)
    params = GenerateParameters(max_new_tokens=400)
    await read_two_then_close(lambda: engine_backend.generate_stream(prompt, params), how)

    def dropped() -> bool:
        m = engine.metrics()
        return m.get(key, 0.0) > before and m["streamgate_engine_running_sequences"] == 0

    await poll(dropped, "the engine to drop the sequence")
    await poll(engine.idle, "the engine to become idle")


async def test_engine_overloaded_is_retryable(limited_engine: Engine) -> None:
    # Two request slots: two streams in flight, the third is refused at once.
    # The first runs (batch size 1) for 400 steps, the second waits behind it.
    prompt = limited_engine.long_running_prompt(400)
    params = GenerateParameters(max_new_tokens=400)
    async with TGIBackend.for_url(limited_engine.url) as backend:
        first = backend.generate_stream(prompt, params)
        second = backend.generate_stream(prompt, params)
        await anext(first)
        waiting = asyncio.ensure_future(anext(second))  # queued: one sequence per batch
        try:
            await poll(lambda: limited_engine.metrics()["tgi_queue_size"] == 1, "a queued request")
            events, err = await fail(backend.generate_stream(prompt, params))
            assert not events
            assert (err.kind, err.retryable, err.tokens_received) == ("overloaded", True, 0)
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await first.aclose()
            await second.aclose()
    await poll(limited_engine.idle, "the engine to become idle")


# ---- the fake: normal streams ---------------------------------------------------------------


@pytest.mark.parametrize("framing", ["", "crlf=1", "space=1", "crlf=1 space=1"])
async def test_fake_stream_and_parameters(fake_backend: TGIBackend, framing: str) -> None:
    params = GenerateParameters(
        max_new_tokens=7, top_n_tokens=3, do_sample=True, seed=11, return_full_text=True
    )
    prompt = f"mode:normal {framing}".strip()
    events = await collect(fake_backend.generate_stream(prompt, params))
    assert [e.token.text for e in events] == [f"t{i} " for i in range(7)]
    assert all(len(e.top_tokens) == 3 for e in events)
    last = events[-1]
    assert last.generated_text == prompt + "".join(f"t{i} " for i in range(7))
    assert last.details is not None
    assert (last.details.generated_tokens, last.details.seed) == (7, 11)


async def test_fake_info_health_and_no_tokenize(fake_backend: TGIBackend) -> None:
    info = await fake_backend.info()
    assert info.model_id == "fake/tgi" and info.max_total_tokens == 2048
    assert info.raw["fake_default_mode"] == "normal"
    assert await fake_backend.health()
    assert await fake_backend.tokenize("x") is None  # the fake has no /tokenize


# ---- the fake: faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "kind", "retryable", "tokens", "status"),
    [
        ("mode:error_mid_stream", "generation", False, 3, None),
        ("mode:error_mid_stream after=0", "generation", False, 0, None),
        ("mode:overloaded", "overloaded", True, 0, None),
        ("mode:validation", "validation", False, 0, None),
        ("mode:malformed", "protocol", False, 3, None),
        ("mode:eof", "unavailable", False, 3, None),
        ("mode:eof after=0", "unavailable", True, 0, None),
        ("mode:http_error status=429", "overloaded", True, 0, 429),
        ("mode:http_error status=422", "validation", False, 0, 422),
        ("mode:http_error status=424", "generation", False, 0, 424),
        ("mode:http_error status=400 json=0", "validation", False, 0, 400),
        ("mode:http_error status=500", "unavailable", True, 0, 500),
        ("mode:http_error status=503 json=0", "unavailable", True, 0, 503),
    ],
)
async def test_fake_faults(
    fake_backend: TGIBackend,
    prompt: str,
    kind: str,
    retryable: bool,
    tokens: int,
    status: int | None,
) -> None:
    events, err = await fail(fake_backend.generate_stream(prompt, GenerateParameters()))
    assert len(events) == tokens
    assert (err.kind, err.retryable, err.tokens_received) == (kind, retryable, tokens)
    assert err.status == status and err.backend == "fake"


async def test_fake_drop_mid_stream(fake_backend: TGIBackend) -> None:
    events, err = await fail(
        fake_backend.generate_stream("mode:drop after=3", GenerateParameters())
    )
    # A reset may discard tokens the client had not read yet; what counts is that the error
    # reports exactly the tokens handed over, and allows a retry only if there were none.
    assert 0 <= len(events) <= 3
    assert err.kind == "unavailable" and err.tokens_received == len(events)
    assert err.retryable == (not events)


async def test_connect_refused() -> None:
    async with TGIBackend.for_url(f"http://127.0.0.1:{free_port()}", name="nobody") as backend:
        events, err = await fail(backend.generate_stream("x", GenerateParameters()))
        assert not events
        assert (err.kind, err.retryable, err.tokens_received) == ("unavailable", True, 0)
        assert not await backend.health()
        with pytest.raises(BackendError) as caught:
            await backend.info()
        assert (caught.value.kind, caught.value.retryable) == ("unavailable", True)


# ---- the fake: timeouts and keep-alives -----------------------------------------------------


async def test_idle_timeout(fake: Fake) -> None:
    before = fake.stats()["disconnects"]
    async with TGIBackend.for_url(fake.url, idle_timeout_seconds=0.5) as backend:
        events, err = await fail(backend.generate_stream("mode:hang", timeout=None))
    assert not events
    assert (err.kind, err.retryable) == ("timeout", False) and "idle" in err.message
    # Giving up closed the connection: the fake saw its client leave.
    await poll(lambda: fake.stats()["disconnects"] > before, "the fake to see the disconnect")


@pytest.mark.parametrize("prompt", ["mode:hang", "mode:slow_first first_delay=30"])
async def test_deadline_includes_time_to_first_token(fake: Fake, prompt: str) -> None:
    async with TGIBackend.for_url(fake.url, idle_timeout_seconds=None) as backend:
        events, err = await fail(backend.generate_stream(prompt, timeout=0.5))
    assert not events
    assert (err.kind, err.retryable) == ("timeout", False) and "deadline" in err.message


async def test_deadline_mid_stream(fake_backend: TGIBackend) -> None:
    stream = fake_backend.generate_stream("mode:normal delay=0.05 tokens=2000", timeout=0.5)
    events, err = await fail(stream)
    assert (err.kind, err.retryable) == ("timeout", False) and "deadline" in err.message
    assert err.tokens_received == len(events)


async def test_keep_alives_keep_a_quiet_stream_alive(fake: Fake) -> None:
    async with TGIBackend.for_url(fake.url, idle_timeout_seconds=1.0) as backend:
        # Comments every 0.1 s, never a token: only the deadline ends it, not the idle timeout.
        stream = backend.generate_stream("mode:keepalive_only keepalive=0.1", timeout=2.5)
        events, err = await fail(stream)
        assert not events
        assert err.kind == "timeout" and "deadline" in err.message
        # A slow first token with keep-alives in between arrives; without them it times out.
        prompt = "mode:slow_first first_delay=2 tokens=3"
        events = await collect(backend.generate_stream(prompt + " keepalive=0.1"))
        assert len(events) == 3 and events[-1].final
        events, err = await fail(backend.generate_stream(prompt))
        assert not events
        assert err.kind == "timeout" and "idle" in err.message


# ---- the fake: cancellation and connection reuse --------------------------------------------


@pytest.mark.parametrize("how", ["aclosing", "aclose", "cancel", "handoff"])
async def test_cancel_reaches_the_fake(fake: Fake, fake_backend: TGIBackend, how: str) -> None:
    before = fake.stats()
    prompt = "mode:normal delay=0.05 tokens=2000"
    await read_two_then_close(lambda: fake_backend.generate_stream(prompt), how)
    await poll(lambda: fake.stats()["disconnects"] > before["disconnects"], "the disconnect")
    # The connection was closed, not pooled: the next request needs a new one.
    await collect(fake_backend.generate_stream("mode:normal tokens=3"))
    assert fake.stats()["connections"] == before["connections"] + 2


async def test_session_is_reused(fake: Fake) -> None:
    before = fake.stats()["connections"]
    async with TGIBackend.for_url(fake.url, name="fake") as backend:
        for _ in range(3):
            events = await collect(backend.generate_stream("mode:normal tokens=5"))
            assert len(events) == 5
        await fail(backend.generate_stream("mode:overloaded"))  # an error event ends cleanly
        assert await backend.health()
        await backend.info()
        events = await collect(backend.generate_stream("mode:normal tokens=5"))
        assert len(events) == 5
    # Only generation requests are counted by the fake: all five went over one connection.
    assert fake.stats()["connections"] == before + 1
