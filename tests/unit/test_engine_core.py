"""The engine in-process (real model, scheduler, KV cache): batching never changes results."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from streamgate.engine.config import EngineConfig
from streamgate.engine.llm_engine import LLMEngine
from streamgate.engine.sequence import SamplingParams, TokenEvent


@pytest.fixture
async def engine() -> AsyncIterator[LLMEngine]:
    eng = LLMEngine.from_config(EngineConfig(max_total_tokens=512, max_batch_total_tokens=8192))
    eng.start(asyncio.get_running_loop())
    yield eng
    eng.shutdown()


async def run(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[TokenEvent]:
    return [event async for event in engine.submit(prompt, params)]


def ids(events: list[TokenEvent]) -> list[int]:
    return [e.token.id for e in events]


def prompt(seed: int, length: int) -> list[int]:
    # Byte tokens of the tiny model are ids 3..258; BOS is 1.
    return [1] + [3 + (seed * 7919 + i * 104729) % 256 for i in range(length - 1)]


async def wait_idle(engine: LLMEngine) -> None:
    for _ in range(200):
        stats = engine.stats()
        if stats.running == 0 and stats.waiting == 0 and stats.kv_blocks_used == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine not idle: {engine.stats()}")


GREEDY = SamplingParams(max_new_tokens=24)


async def test_batched_greedy_equals_one_at_a_time(engine: LLMEngine) -> None:
    prompts = [prompt(i, n) for i, n in enumerate([5, 40, 17, 90, 3, 33, 64, 8])]
    alone = [ids(await run(engine, p, GREEDY)) for p in prompts]

    async def staggered(i: int, p: list[int]) -> list[int]:
        await asyncio.sleep(0.004 * i)  # later requests join a batch already decoding
        return ids(await run(engine, p, GREEDY))

    together = await asyncio.gather(*(staggered(i, p) for i, p in enumerate(prompts)))
    assert list(together) == alone
    assert engine.stats().steps_total > 0
    await wait_idle(engine)


async def test_prefix_cached_output_equals_uncached(engine: LLMEngine) -> None:
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
        EngineConfig(max_total_tokens=512, enable_prefix_caching=False)
    )
    uncached.start(asyncio.get_running_loop())
    try:
        assert ids(await run(uncached, [*shared, 70], GREEDY)) == ids(other_suffix)
    finally:
        uncached.shutdown()


async def test_preemption_under_a_tiny_kv_budget_keeps_outputs() -> None:
    config = EngineConfig(max_total_tokens=128, kv_cache_tokens=160, max_input_tokens=64)
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
