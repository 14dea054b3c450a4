"""TGI's validation errors over raw HTTP: status, error_type and TGI's exact messages.

Non-streamed routes answer 422 with `{"error", "error_type": "validation"}`; streamed routes
answer 200 with that object as their only `data:` event, as TGI does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from support.engines import Engine

if TYPE_CHECKING:
    from collections.abc import Callable


# The limits of the shared `engine` fixture (checked by `limits` below).
MAX_INPUT_TOKENS = 256
MAX_TOTAL_TOKENS = 512
PREFIX = "Input validation error: "
TIMEOUT = aiohttp.ClientTimeout(total=120)


@pytest.fixture(autouse=True, scope="module")
def limits(engine: Engine) -> None:
    info = engine.info()
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (
        MAX_INPUT_TOKENS,
        MAX_TOTAL_TOKENS,
    )


async def post(url: str, body: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        async with session.post(url, data=data, headers=headers) as resp:
            return resp.status, await resp.read()


async def expect_error(url: str, body: Any, message: str, *, stream: bool = True) -> None:
    """The same validation error from /generate (422) and /generate_stream (200 + event)."""
    status, raw = await post(url + "/generate", body)
    assert status == 422, raw
    assert json.loads(raw) == {"error": PREFIX + message, "error_type": "validation"}
    status, raw = await post(url + "/", body)
    assert status == 422, raw
    assert json.loads(raw) == {"error": PREFIX + message, "error_type": "validation"}
    if stream:
        status, raw = await post(url + "/generate_stream", body)
        assert status == 200, raw
        assert raw.startswith(b"data:{") and raw.endswith(b"\n\n")
        events = [e for e in raw.split(b"\n\n") if e]
        assert len(events) == 1, raw
        assert json.loads(events[0][len(b"data:") :]) == {
            "error": PREFIX + message,
            "error_type": "validation",
        }


async def count_tokens(url: str, text: str) -> int:
    status, raw = await post(url + "/tokenize", {"inputs": text})
    assert status == 200, raw
    return len(json.loads(raw))


TEMPERATURE = "`temperature` must be strictly positive"
FREQUENCY = "`frequency_penalty` must be >= -2.0 and <= 2.0"
TOP_P = "`top_p` must be > 0.0 and < 1.0"
TYPICAL_P = "`typical_p` must be > 0.0 and < 1.0"
TOP_K = "`top_k` must be strictly positive"
TRUNCATE = f"`truncate` must be strictly positive and less than {MAX_INPUT_TOKENS}. Given: "

CASES = [
    pytest.param({"temperature": 0.0}, TEMPERATURE, id="temperature 0"),
    pytest.param({"temperature": -1.0}, TEMPERATURE, id="temperature < 0"),
    pytest.param(
        {"repetition_penalty": 0},
        "`repetition_penalty` must be strictly positive",
        id="repetition_penalty 0",
    ),
    pytest.param({"frequency_penalty": 2.5}, FREQUENCY, id="frequency_penalty > 2"),
    pytest.param({"frequency_penalty": -2.1}, FREQUENCY, id="frequency_penalty < -2"),
    pytest.param({"top_p": 0.0}, TOP_P, id="top_p 0"),
    pytest.param({"top_p": 1.0}, TOP_P, id="top_p 1"),
    pytest.param({"top_p": 1.5}, TOP_P, id="top_p > 1"),
    pytest.param({"typical_p": 0.0}, TYPICAL_P, id="typical_p 0"),
    pytest.param({"typical_p": 1.0}, TYPICAL_P, id="typical_p 1"),
    pytest.param({"top_k": 0}, TOP_K, id="top_k 0"),
    pytest.param({"top_k": -3}, TOP_K, id="top_k < 0"),
    pytest.param(
        {"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive", id="max_new_tokens 0"
    ),
    pytest.param(
        {"stop": ["a", "b", "c", "d", "e"]},
        "`stop` supports up to 4 stop sequences. Given: 5",
        id="too many stops",
    ),
    pytest.param(
        {"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6", id="top_n_tokens"
    ),
    pytest.param({"truncate": 0}, TRUNCATE + "0", id="truncate 0"),
    pytest.param(
        {"truncate": MAX_INPUT_TOKENS + 1},
        TRUNCATE + str(MAX_INPUT_TOKENS + 1),
        id="truncate too large",
    ),
    pytest.param(
        {"grammar": {"type": "regex", "value": "a+"}}, "grammar is not supported", id="grammar"
    ),
    pytest.param(
        {"adapter_id": "my-lora"},
        "`adapter_id` is not supported: this engine serves no adapters",
        id="adapter_id",
    ),
    pytest.param(
        {"watermark": True}, "`watermark` is not supported by this engine", id="watermark"
    ),
]


@pytest.mark.parametrize(("params", "message"), CASES)
async def test_parameter_errors(url: str, params: dict[str, Any], message: str) -> None:
    await expect_error(url, {"inputs": "Hello", "parameters": params}, message)


async def test_empty_inputs(url: str) -> None:
    await expect_error(url, {"inputs": ""}, "`inputs` cannot be empty")


async def test_input_plus_max_new_tokens_over_max_total_tokens(url: str) -> None:
    n = await count_tokens(url, "Hello")
    await expect_error(
        url,
        {"inputs": "Hello", "parameters": {"max_new_tokens": MAX_TOTAL_TOKENS}},
        f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
        f"Given: {n} `inputs` tokens and {MAX_TOTAL_TOKENS} `max_new_tokens`",
    )
    # TGI 3.x checks the first chunk of at most 1024 new tokens; exactly at the limit is fine.
    status, raw = await post(
        url + "/generate",
        {"inputs": "Hello", "parameters": {"max_new_tokens": MAX_TOTAL_TOKENS - n}},
    )
    assert status == 200, raw


async def long_text(url: str, min_tokens: int) -> tuple[str, int]:
    text = ""
    while (n := await count_tokens(url, text)) <= min_tokens:
        text += "The quick brown fox jumps over the lazy dog. "
    return text, n


async def test_input_too_long(url: str) -> None:
    text, n = await long_text(url, MAX_INPUT_TOKENS)
    assert n < MAX_TOTAL_TOKENS - 1  # else the total-tokens check fires first
    await expect_error(
        url,
        {"inputs": text, "parameters": {"max_new_tokens": 1}},
        f"`inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: {n}",
    )


async def test_truncate_keeps_the_end_of_the_input(engine: Engine) -> None:
    url = engine.url
    text, _ = await long_text(url, MAX_INPUT_TOKENS)
    ids = [t["id"] for t in engine.tokenize(text)]
    status, headers, body = engine.post(
        "/generate",
        {
            "inputs": text,
            "parameters": {"max_new_tokens": 1, "truncate": 7, "decoder_input_details": True},
        },
    )
    assert status == 200, body
    assert isinstance(body, dict)
    assert headers["x-prompt-tokens"] == "7"
    assert [t["id"] for t in body["details"]["prefill"]] == ids[-7:]


async def test_max_new_tokens_null_fills_the_context(engine: Engine) -> None:
    """TGI 3.x: no max_new_tokens means up to max_total_tokens - input tokens."""
    status, headers, body = engine.post(
        "/generate", {"inputs": "Hi", "parameters": {"details": True}}
    )
    assert status == 200, body
    assert isinstance(body, dict)
    details = body["details"]
    n = int(headers["x-prompt-tokens"])
    if details["finish_reason"] == "length":
        assert details["generated_tokens"] == MAX_TOTAL_TOKENS - n
    else:
        assert details["generated_tokens"] < MAX_TOTAL_TOKENS - n


async def test_best_of_is_disabled_by_default(url: str) -> None:
    body = {"inputs": "Hi", "parameters": {"best_of": 2, "do_sample": True}}
    status, raw = await post(url + "/generate", body)
    assert status == 422
    assert json.loads(raw) == {
        "error": PREFIX + "`best_of` != 1 is not allowed for this endpoint",
        "error_type": "validation",
    }


async def test_stream_only_checks(url: str) -> None:
    for params, message in [
        (
            {"best_of": 2, "do_sample": True},
            "`best_of` != 1 is not supported when streaming tokens",
        ),
        (
            {"decoder_input_details": True},
            "`decoder_input_details` == true is not supported when streaming tokens",
        ),
    ]:
        status, raw = await post(url + "/generate_stream", {"inputs": "Hi", "parameters": params})
        assert status == 200
        assert (
            raw
            == b"data:"
            + json.dumps(
                {"error": PREFIX + message, "error_type": "validation"}, separators=(",", ":")
            ).encode()
            + b"\n\n"
        )


async def test_best_of_checks(limited_engine: Engine, wait: Callable[..., None]) -> None:
    """With --max-best-of 2: TGI's best_of rules, and a working best_of."""
    url = limited_engine.url
    cases = [
        ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        ({"best_of": 2, "do_sample": True, "seed": 3}, "`seed` must not be set when `best_of` > 1"),
    ]
    for params, message in cases:
        status, raw = await post(url + "/generate", {"inputs": "Hi", "parameters": params})
        assert status == 422, raw
        assert json.loads(raw)["error"] == PREFIX + message

    body = {
        "inputs": "Hi",
        "parameters": {"best_of": 2, "do_sample": True, "max_new_tokens": 5, "details": True},
    }
    wait(limited_engine.idle, "both slots of the limited engine to be free")  # best_of 2: 2 slots
    status, raw = await post(url + "/generate", body)
    assert status == 200, raw
    details = json.loads(raw)["details"]
    assert len(details["best_of_sequences"]) == 1
    assert details["seed"] is not None


def _params(**params: Any) -> dict[str, Any]:
    return {"inputs": "Hi", "parameters": params}


MALFORMED = [
    pytest.param(_params(max_tokens=5), "parameters.max_tokens", id="unknown parameter"),
    pytest.param({"inputs": "Hi", "prompt": "x"}, "prompt", id="unknown top-level key"),
    pytest.param({"parameters": {}}, "inputs", id="missing inputs"),
    pytest.param(_params(temperature="hot"), "parameters.temperature", id="wrong type"),
    pytest.param(_params(max_new_tokens=-1), "parameters.max_new_tokens", id="negative unsigned"),
    pytest.param(_params(top_k=2.5), "parameters.top_k", id="float for int"),
    pytest.param(b"{inputs:", "", id="not JSON"),
]


@pytest.mark.parametrize(("body", "where"), MALFORMED)
async def test_malformed_bodies_are_validation_errors(url: str, body: Any, where: str) -> None:
    for route in ("/generate", "/generate_stream", "/"):
        status, raw = await post(url + route, body)
        assert status == 422, raw
        error = json.loads(raw)
        assert error["error_type"] == "validation"
        assert where in error["error"]


async def test_explicit_nulls_are_defaults(url: str) -> None:
    """The official client sends every parameter; null means TGI's default."""
    nulls = dict.fromkeys(
        [
            "best_of", "temperature", "repetition_penalty", "frequency_penalty", "top_k",
            "top_p", "typical_p", "do_sample", "return_full_text", "stop", "truncate",
            "watermark", "details", "decoder_input_details", "seed", "top_n_tokens", "grammar",
            "adapter_id",
        ]
    )  # fmt: skip
    body = {"inputs": "Hi", "parameters": {**nulls, "max_new_tokens": 3}, "stream": None}
    status, raw = await post(url + "/generate", body)
    assert status == 200, raw
    assert set(json.loads(raw)) == {"generated_text"}  # details not asked for
    status, raw = await post(url + "/generate", {"inputs": "Hi", "parameters": None})
    assert status == 200, raw


async def test_huge_input_is_truncated_or_refused(engine: Engine) -> None:
    """A prompt longer than the context: truncate keeps its end; without truncate, TGI's check."""
    text = "0123456789" * 2000  # tokenized off the event loop (long input)
    n = len(engine.tokenize(text))
    assert n > MAX_TOTAL_TOKENS
    await expect_error(
        engine.url,
        {"inputs": text, "parameters": {"max_new_tokens": 1}},
        f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
        f"Given: {n} `inputs` tokens and 1 `max_new_tokens`",
    )
    params = {"max_new_tokens": 1, "truncate": 10}
    status, headers, body = engine.post("/generate", {"inputs": text, "parameters": params})
    assert status == 200, body
    assert headers["x-prompt-tokens"] == "10"
