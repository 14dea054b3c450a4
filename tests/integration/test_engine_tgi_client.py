"""The official TGI client (`text-generation` 0.7.0) against a real engine process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from text_generation import AsyncClient, Client
from text_generation.errors import OverloadedError, ValidationError
from text_generation.types import FinishReason

from support.engines import Engine

if TYPE_CHECKING:
    from collections.abc import Callable


TIMEOUT = 120  # the client's timeout bounds a whole call

# text-generation 0.7.0 calls pydantic's deprecated `.dict()`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")


def client(url: str) -> Client:
    return Client(url, timeout=TIMEOUT)


def test_generate_returns_details(url: str) -> None:
    response = client(url).generate("Hello", max_new_tokens=12)
    details = response.details
    assert details.generated_tokens == len(details.tokens) > 0
    assert details.generated_tokens <= 12
    if details.finish_reason == FinishReason.Length:
        assert details.generated_tokens == 12
    assert details.seed is None  # greedy
    assert details.prefill == []
    assert all(t.logprob is not None and t.logprob <= 0.0 for t in details.tokens)
    # The text is the decoded tokens (the tiny tokenizer has no special tokens but BOS/EOS).
    assert response.generated_text == "".join(t.text for t in details.tokens if not t.special)


def test_generate_is_deterministic_when_greedy(url: str) -> None:
    a = client(url).generate("The sky is", max_new_tokens=16)
    b = client(url).generate("The sky is", max_new_tokens=16)
    assert a.generated_text == b.generated_text
    assert [t.id for t in a.details.tokens] == [t.id for t in b.details.tokens]


def test_generate_stream_matches_generate(url: str) -> None:
    whole = client(url).generate("Once upon", max_new_tokens=16)
    events = list(client(url).generate_stream("Once upon", max_new_tokens=16))
    assert [e.token.id for e in events] == [t.id for t in whole.details.tokens]
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == whole.generated_text
    assert last.details is not None
    assert last.details.finish_reason == whole.details.finish_reason
    assert last.details.generated_tokens == len(events)


def test_stop_sequence_ends_generation(engine: Engine) -> None:
    url = engine.url
    prompt = engine.long_running_prompt(40)
    full = client(url).generate(prompt, max_new_tokens=40).generated_text
    stop = full[10:12]
    response = client(url).generate(prompt, max_new_tokens=40, stop_sequences=[stop])
    assert response.details.finish_reason == FinishReason.StopSequence
    assert stop in response.generated_text
    assert full.startswith(response.generated_text)
    # The text ends within the token that completed the stop sequence.
    assert len(response.generated_text) < full.index(stop) + len(stop) + len(
        response.details.tokens[-1].text
    )


def test_seeded_sampling_is_reproducible(url: str) -> None:
    def sample(seed: int) -> tuple[str, int | None]:
        r = client(url).generate(
            "Random text:", do_sample=True, seed=seed, max_new_tokens=24, temperature=1.5
        )
        return r.generated_text, r.details.seed

    first, seed = sample(42)
    again, _ = sample(42)
    assert seed == 42
    assert first == again
    others = {sample(s)[0] for s in (1, 2, 3)}
    assert others != {first}  # different seeds do not all give the same text


def test_unseeded_sampling_reports_its_seed(url: str) -> None:
    response = client(url).generate("Hi", do_sample=True, max_new_tokens=4)
    assert response.details.seed is not None


def test_top_n_tokens(url: str) -> None:
    response = client(url).generate("Hello", max_new_tokens=6, top_n_tokens=3)
    top = response.details.top_tokens
    assert top is not None and len(top) == len(response.details.tokens)
    for token, candidates in zip(response.details.tokens, top, strict=True):
        assert len(candidates) == 3
        assert candidates[0].id == token.id  # greedy picks the most likely token
        logprobs = [c.logprob for c in candidates]
        assert logprobs == sorted(logprobs, reverse=True)

    events = list(client(url).generate_stream("Hello", max_new_tokens=6, top_n_tokens=3))
    assert all(e.top_tokens is not None and len(e.top_tokens) == 3 for e in events)


def test_decoder_input_details(url: str) -> None:
    response = client(url).generate("Hello there", max_new_tokens=2, decoder_input_details=True)
    prefill = response.details.prefill
    assert len(prefill) > 1
    assert prefill[0].logprob is None
    assert all(t.logprob is not None for t in prefill[1:])


def test_return_full_text(url: str) -> None:
    response = client(url).generate("Hello", max_new_tokens=4, return_full_text=True)
    assert response.generated_text.startswith("Hello")


def test_validation_errors_map_to_validation_error(url: str) -> None:
    with pytest.raises(ValidationError, match="`max_new_tokens` must be strictly positive"):
        client(url).generate("Hello", max_new_tokens=0)
    with pytest.raises(ValidationError, match="`stop` supports up to 4 stop sequences"):
        client(url).generate("Hello", stop_sequences=["a", "b", "c", "d", "e"])
    with pytest.raises(ValidationError, match="`top_n_tokens` must be >= 0 and <= 5"):
        list(client(url).generate_stream("Hello", top_n_tokens=6))
    with pytest.raises(ValidationError, match="`inputs` tokens \\+ `max_new_tokens` must be <="):
        list(client(url).generate_stream("Hello", max_new_tokens=1000))


async def test_async_client_generate_and_stream(url: str) -> None:
    aclient = AsyncClient(url, timeout=TIMEOUT)
    response = await aclient.generate("Hello", max_new_tokens=8)
    events = [e async for e in aclient.generate_stream("Hello", max_new_tokens=8)]
    assert [e.token.id for e in events] == [t.id for t in response.details.tokens]
    assert events[-1].generated_text == response.generated_text
    with pytest.raises(ValidationError, match="`max_new_tokens` must be strictly positive"):
        await aclient.generate("Hello", max_new_tokens=0)
    with pytest.raises(ValidationError, match="`max_new_tokens` must be strictly positive"):
        async for _ in aclient.generate_stream("Hello", max_new_tokens=0):
            pass


async def test_overloaded_error_mapping(limited_engine: Engine, wait: Callable[..., None]) -> None:
    """Past max_concurrent_requests, TGI's `overloaded` error comes back at once."""
    url = limited_engine.url
    prompt = limited_engine.long_running_prompt(400)
    wait(limited_engine.idle, "both slots of the limited engine to be free")
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 400}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        # Two streams fill both slots: the first runs (batch size 1) for 400 steps, the second
        # waits behind it; neither can end before the first has generated 400 tokens.
        first = await session.post(url + "/generate_stream", json=body)
        event = b":\n\n"
        while event == b":\n\n":  # keep-alives (10 ms) may come before the first token
            event = await first.content.readuntil(b"\n\n")
        assert event.startswith(b"data:{") and b'"token"' in event, event
        second = await session.post(url + "/generate_stream", json=body)
        assert second.status == 200

        with pytest.raises(OverloadedError, match="Model is overloaded"):
            client(url).generate("Hello", max_new_tokens=2)
        with pytest.raises(OverloadedError, match="Model is overloaded"):
            list(client(url).generate_stream("Hello", max_new_tokens=2))
        aclient = AsyncClient(url, timeout=TIMEOUT)
        with pytest.raises(OverloadedError, match="Model is overloaded"):
            await aclient.generate("Hello", max_new_tokens=2)

        # The waiting stream was kept alive with `:` comments before its first token.
        head = await second.content.readuntil(b"data:")
        assert head.startswith(b":\n\n")
        first.close()
        second.close()
