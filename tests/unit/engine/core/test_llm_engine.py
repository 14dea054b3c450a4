"""The engine in-process (real model, scheduler, KV cache): batching never changes results;
requests reach the step loop as typed commands and leave it as their stream's events."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from streamgate.engine.config import EngineConfig
from streamgate.engine.core.llm_engine import GenerationError, LLMEngine, RequestStream
from streamgate.engine.core.sequence import (
    ErrorEvent,
    FinishInfo,
    SamplingParams,
    TokenEvent,
    TokenInfo,
)

# The equivalence tests run on the built-in tiny model and on the packaged real one (its
# 4-bit layers and the decoder's native operations, at every batch size the tests make).
MODELS = ["tiny", "smollm2-135m-instruct"]


async def started(config: EngineConfig) -> AsyncIterator[LLMEngine]:
    eng = LLMEngine.from_config(config)
    eng.start(asyncio.get_running_loop())
    yield eng
    eng.shutdown()


@pytest.fixture
async def engine() -> AsyncIterator[LLMEngine]:
    async for eng in started(EngineConfig(max_total_tokens=512, max_batch_total_tokens=8192)):
        yield eng


@pytest.fixture(params=MODELS)
async def each_model(request: pytest.FixtureRequest) -> AsyncIterator[LLMEngine]:
    config = EngineConfig(model=request.param, max_total_tokens=512, max_batch_total_tokens=8192)
    async for eng in started(config):
        yield eng


async def collect(stream: RequestStream) -> list[TokenEvent]:
    return [event async for event in stream]


async def run(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[TokenEvent]:
    return await collect(engine.submit(prompt, params))


def ids(events: list[TokenEvent]) -> list[int]:
    return [e.token.id for e in events]


def prompt(seed: int, length: int) -> list[int]:
    # Byte tokens of the tiny model are ids 3..258; BOS is 1 (ordinary tokens of SmolLM2's
    # vocabulary, and its <|im_start|>).
    return [1] + [3 + (seed * 7919 + i * 104729) % 256 for i in range(length - 1)]


async def wait_idle(engine: LLMEngine) -> None:
    for _ in range(200):
        stats = engine.stats()
        if stats.running == 0 and stats.waiting == 0 and stats.kv_blocks_used == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine not idle: {engine.stats()}")


GREEDY = SamplingParams(max_new_tokens=24)


async def test_batched_greedy_equals_one_at_a_time(each_model: LLMEngine) -> None:
    engine = each_model
    prompts = [prompt(i, n) for i, n in enumerate([5, 40, 17, 90, 3, 33, 64, 8])]
    alone = [ids(await run(engine, p, GREEDY)) for p in prompts]

    async def staggered(i: int, p: list[int]) -> list[int]:
        await asyncio.sleep(0.004 * i)  # later requests join a batch already decoding
        return ids(await run(engine, p, GREEDY))

    together = await asyncio.gather(*(staggered(i, p) for i, p in enumerate(prompts)))
    assert list(together) == alone
    assert engine.stats().steps_total > 0
    await wait_idle(engine)


async def test_prefix_cached_output_equals_uncached(each_model: LLMEngine) -> None:
    engine = each_model
    model = engine.config.model
    shared = prompt(99, 200)
    first = await run(engine, [*shared, 50, 60], GREEDY)
    assert first[-1].finish is not None and first[-1].finish.cached_tokens == 0
    second = await run(engine, [*shared, 50, 60], GREEDY)
    assert second[-1].finish is not None
    assert second[-1].finish.cached_tokens == 192  # 12 full blocks of 16
    assert ids(second) == ids(first)
    other_suffix = await run(engine, [*shared, 70], GREEDY)
    assert other_suffix[-1].finish is not None and other_suffix[-1].finish.cached_tokens == 192
    assert engine.stats().prefix_cache_hit_tokens_total == 384

    uncached = LLMEngine.from_config(
        EngineConfig(model=model, max_total_tokens=512, enable_prefix_caching=False)
    )
    uncached.start(asyncio.get_running_loop())
    try:
        assert ids(await run(uncached, [*shared, 70], GREEDY)) == ids(other_suffix)
    finally:
        uncached.shutdown()


@pytest.mark.parametrize("model", MODELS)
async def test_preemption_under_a_tiny_kv_budget_keeps_outputs(model: str) -> None:
    config = EngineConfig(
        model=model, max_total_tokens=128, kv_cache_tokens=160, max_input_tokens=64
    )
    engine = LLMEngine.from_config(config)
    engine.start(asyncio.get_running_loop())
    try:
        params = SamplingParams(max_new_tokens=60)
        prompts = [prompt(i, 30 + i) for i in range(6)]
        alone = [ids(await run(engine, p, params)) for p in prompts]
        assert engine.stats().preemptions_total == 0
        together = await asyncio.gather(*(run(engine, p, params) for p in prompts))
        assert engine.stats().preemptions_total > 0
        assert [ids(t) for t in together] == alone
        await wait_idle(engine)
    finally:
        engine.shutdown()


async def test_seeded_sampling_reproduces_whatever_shares_the_batch(engine: LLMEngine) -> None:
    sampled = SamplingParams(max_new_tokens=30, do_sample=True, temperature=0.9, top_k=50, seed=7)
    p = prompt(3, 12)
    alone = ids(await run(engine, p, sampled))
    noise = [
        run(engine, prompt(i, 20), SamplingParams(max_new_tokens=30, do_sample=True))
        for i in range(4)
    ]
    results = await asyncio.gather(run(engine, p, sampled), *noise)
    assert ids(results[0]) == alone
    assert results[0][-1].finish is not None and results[0][-1].finish.seed == 7
    other_seed = ids(
        await run(engine, p, SamplingParams(max_new_tokens=30, do_sample=True, seed=8))
    )
    assert other_seed != alone


async def test_abort_frees_the_sequence_and_its_blocks(engine: LLMEngine) -> None:
    stream = engine.submit(prompt(5, 100), SamplingParams(max_new_tokens=400))
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            assert engine.stats().kv_blocks_used > 0
            stream.abort()
            break
    await wait_idle(engine)
    assert engine.stats().aborted_total == 1


async def test_finish_reasons_and_text(engine: LLMEngine) -> None:
    events = await run(engine, prompt(1, 10), SamplingParams(max_new_tokens=5))
    assert [e.index for e in events] == [0, 1, 2, 3, 4]
    finish = events[-1].finish
    assert finish is not None and finish.reason == "length" and finish.generated_tokens == 5
    assert "".join(e.token.text for e in events) == finish.generated_text
    # A stop sequence made of the first generated characters ends the stream there.
    stop_text = finish.generated_text[:2]
    stopped = await run(engine, prompt(1, 10), SamplingParams(max_new_tokens=5, stop=(stop_text,)))
    assert stopped[-1].finish is not None and stopped[-1].finish.reason == "stop_sequence"
    assert stopped[-1].finish.generated_text.endswith(stop_text)
    # Sampling hot enough eventually picks EOS for some seed: the stream ends on it.
    for seed in range(200):
        params = SamplingParams(max_new_tokens=64, do_sample=True, temperature=3.0, seed=seed)
        events = await run(engine, prompt(2, 4), params)
        if events[-1].finish is not None and events[-1].finish.reason == "eos_token":
            assert events[-1].token.id == engine.tokenizer.eos_token_id
            assert events[-1].token.special
            return
    pytest.fail("no seed produced an EOS token")


async def test_prefill_logprobs_and_top_tokens(engine: LLMEngine) -> None:
    p = prompt(4, 9)
    params = SamplingParams(max_new_tokens=3, prefill_logprobs=True, top_n_tokens=3)
    events = await run(engine, p, params)
    finish = events[-1].finish
    assert finish is not None
    assert [t.id for t in finish.prefill] == p
    assert finish.prefill[0].logprob is None
    assert all(t.logprob is not None and t.logprob <= 0 for t in finish.prefill[1:])
    for e in events:
        assert len(e.top_tokens) == 3
        # Greedy: the chosen token is the most likely one.
        assert e.top_tokens[0].id == e.token.id
        assert e.token.logprob == pytest.approx(e.top_tokens[0].logprob)


async def test_abort_reaches_the_engine_once_and_only_while_running(engine: LLMEngine) -> None:
    finished = engine.submit(prompt(6, 10), SamplingParams(max_new_tokens=2))
    assert len(await collect(finished)) == 2
    finished.abort()  # after its last event: nothing to drop
    engine.abort(10**9)  # an id the engine never had: ignored
    stream = engine.submit(prompt(7, 50), SamplingParams(max_new_tokens=400))
    async for _ in stream:
        break
    stream.abort()
    stream.abort()
    for _ in range(500):  # the stats are a snapshot published after each step: poll
        if engine.stats().aborted_total:
            break
        await asyncio.sleep(0.01)
    await wait_idle(engine)
    assert engine.stats().aborted_total == 1


async def test_shutdown_ends_requests_in_flight_with_an_error() -> None:
    engine = LLMEngine.from_config(EngineConfig(max_total_tokens=512))
    engine.start(asyncio.get_running_loop())
    events = aiter(engine.submit(prompt(8, 20), SamplingParams(max_new_tokens=400)))
    await anext(events)
    await asyncio.to_thread(engine.shutdown)  # joins the step thread: not on the event loop
    assert not engine.alive
    with pytest.raises(GenerationError, match="shutting down"):
        async for _ in events:
            pass


async def test_a_request_stream_ends_with_its_last_event_or_its_error() -> None:
    # The engine delivers, the handler iterates; an abort goes out through the callback only.
    aborted: list[int] = []
    stream = RequestStream(5, aborted.append)
    token = TokenInfo(1, "a", None)
    finish = FinishInfo("length", "aa", 2, 3, None, 0, (), 0.0, 0.0)
    stream.deliver(TokenEvent(0, token, ()))
    stream.deliver(TokenEvent(1, token, (), finish))
    assert [e.finish for e in await collect(stream)] == [None, finish]
    stream.abort()  # finished: nothing to abort
    assert aborted == []

    failing = RequestStream(6, aborted.append)
    failing.deliver(ErrorEvent("boom"))
    with pytest.raises(GenerationError, match="boom"):
        await collect(failing)

    running = RequestStream(7, aborted.append)
    running.deliver(TokenEvent(0, token, ()))
    async for _ in running:
        break
    running.abort()
    running.abort()
    assert aborted == [7]
