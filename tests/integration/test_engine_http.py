"""The engine's HTTP contract seen as bytes: SSE framing, routes, headers, disconnects, CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from text_generation import Client

from streamgate.engine.config import EngineConfig
from support.engines import Engine

if TYPE_CHECKING:
    from collections.abc import Callable


TIMEOUT = aiohttp.ClientTimeout(total=120)

# text-generation 0.7.0 calls pydantic's deprecated `.dict()`; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")


async def stream_bytes(url: str, body: Any) -> tuple[aiohttp.ClientResponse, bytes]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(url, json=body) as resp,
    ):
        return resp, await resp.read()


def parse_events(raw: bytes) -> list[dict[str, Any]]:
    """Split an SSE body into its `data:` events, checking TGI's framing on the way."""
    assert raw.startswith(b"data:{")
    assert raw.endswith(b"\n\n")
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        if block == b":":  # keep-alive comment
            continue
        assert block.startswith(b"data:{"), block  # no space after `data:`
        assert b"\n" not in block
        payload = block[len(b"data:") :]
        # Compact separators, as serde_json writes them.
        assert payload == json.dumps(
            json.loads(payload), separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        events.append(json.loads(payload))
    return events


async def test_generate_stream_framing(engine: Engine) -> None:
    url = engine.url
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 10, "details": True}}
    resp, raw = await stream_bytes(url + "/generate_stream", body)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert b"[DONE]" not in raw
    events = parse_events(raw)
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert set(event) == {"index", "token", "top_tokens", "generated_text", "details"}
        assert set(event["token"]) == {"id", "text", "logprob", "special"}
        assert event["top_tokens"] == []
    for event in events[:-1]:
        assert event["generated_text"] is None and event["details"] is None
    last = events[-1]
    assert last["generated_text"] == "".join(
        e["token"]["text"] for e in events if not e["token"]["special"]
    )
    details = last["details"]
    assert set(details) == {
        "finish_reason",
        "generated_tokens",
        "seed",
        "input_length",
        "cached_tokens",
    }
    assert details["finish_reason"] in ("length", "eos_token")
    assert details["generated_tokens"] == len(events)
    assert details["input_length"] == len(engine.tokenize("Hello"))
    assert details["seed"] is None


async def test_stream_details_only_when_asked(url: str) -> None:
    _, raw = await stream_bytes(
        url + "/generate_stream", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}}
    )
    events = parse_events(raw)
    assert events[-1]["generated_text"] is not None
    assert events[-1]["details"] is None


async def test_compat_route(engine: Engine) -> None:
    params = {"max_new_tokens": 5, "details": True}
    status, _, body = engine.post("/", {"inputs": "Hello", "parameters": params})
    assert status == 200
    assert isinstance(body, list) and len(body) == 1
    # TGI's compat route defaults return_full_text to true for text-generation models.
    _, _, plain = engine.post("/generate", {"inputs": "Hello", "parameters": params})
    assert body[0]["generated_text"] == "Hello" + plain["generated_text"]
    assert body[0]["details"] == plain["details"]

    resp, raw = await stream_bytes(
        engine.url + "/", {"inputs": "Hello", "parameters": params, "stream": True}
    )
    assert resp.status == 200
    events = parse_events(raw)
    assert events[-1]["generated_text"] == "Hello" + plain["generated_text"]
    assert [e["token"] for e in events] == plain["details"]["tokens"]


def test_generate_response_shape_and_headers(engine: Engine) -> None:
    status, headers, body = engine.post(
        "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
    )
    assert status == 200
    assert set(body) == {"generated_text"}  # no details unless asked for
    assert headers["Content-Type"] == "application/json"
    assert headers["x-prompt-tokens"] == str(len(engine.tokenize("Hello")))
    for name in ("x-compute-type", "x-total-time", "x-queue-time", "x-inference-time"):
        assert name in headers
    assert 1 <= int(headers["x-generated-tokens"]) <= 4

    _, _, body = engine.post(
        "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True}}
    )
    keys = {"finish_reason", "generated_tokens", "seed", "prefill", "tokens", "cached_tokens"}
    assert set(body["details"]) == keys  # top_tokens and best_of_sequences only when asked


def test_tokenize(engine: Engine) -> None:
    text = "Hello world, hello tokens."
    tokens = engine.tokenize(text)
    assert tokens, "no tokens"
    for token in tokens:
        assert set(token) == {"id", "text", "start", "stop"}
        assert token["text"] == text[token["start"] : token["stop"]]
    assert "".join(t["text"] for t in tokens) == text
    # The ids are the prompt the engine runs: it reports as many input tokens.
    status, headers, _ = engine.post(
        "/generate", {"inputs": text, "parameters": {"max_new_tokens": 1}}
    )
    assert status == 200
    assert headers["x-prompt-tokens"] == str(len(tokens))


def test_info(engine: Engine) -> None:
    info = engine.info()
    for key in (
        "model_id",
        "model_sha",
        "model_pipeline_tag",
        "max_concurrent_requests",
        "max_best_of",
        "max_stop_sequences",
        "max_input_tokens",
        "max_total_tokens",
        "validation_workers",
        "max_client_batch_size",
        "router",
        "version",
        "sha",
        "docker_label",
        "model_dtype",
        "model_device_type",
        "quantize",
        "weight_bytes",
        "block_size",
        "max_batch_total_tokens",
        "max_batch_prefill_tokens",
    ):
        assert key in info, key
    assert info["model_id"] == "tiny"
    assert info["model_pipeline_tag"] == "text-generation"
    assert info["router"] == "text-generation-router"
    assert info["max_input_tokens"] == 256
    assert info["max_total_tokens"] == 512
    assert info["max_concurrent_requests"] == 128
    assert info["max_best_of"] == 1
    assert info["max_stop_sequences"] == 4
    assert info["model_dtype"] == "float32"
    assert info["quantize"] is None
    assert info["weight_bytes"] > 0
    # Extension fields for chat templates: tiny has none of its own.
    assert info["chat_template"] is None
    assert (info["bos_token"], info["eos_token"]) == ("<s>", "</s>")


def test_health(engine: Engine) -> None:
    assert engine.get("/health") == (200, b"")


def test_metrics_names(engine: Engine) -> None:
    engine.post("/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    samples = engine.metrics()
    for name in (
        "tgi_request_count",
        "tgi_request_success",
        'tgi_request_failure{err="validation"}',
        'tgi_request_failure{err="overloaded"}',
        'tgi_request_failure{err="dropped"}',
        'tgi_request_failure{err="generation"}',
        "tgi_queue_size",
        "tgi_batch_current_size",
        "tgi_batch_current_max_tokens",
        "tgi_batch_max_total_tokens",
        "tgi_request_duration_count",
        "tgi_request_queue_duration_count",
        "tgi_request_inference_duration_count",
        "tgi_request_mean_time_per_token_duration_count",
        "tgi_request_input_length_count",
        "tgi_request_generated_tokens_count",
        'streamgate_engine_kv_blocks{state="total"}',
        'streamgate_engine_kv_blocks{state="used"}',
        'streamgate_engine_kv_blocks{state="cached"}',
        "streamgate_engine_prefix_cache_hit_tokens_total",
        "streamgate_engine_prompt_tokens_total",
        "streamgate_engine_generated_tokens_total",
        "streamgate_engine_preemptions_total",
        "streamgate_engine_running_sequences",
        "streamgate_engine_weight_bytes",
        "streamgate_engine_steps_total",
    ):
        assert name in samples, name
    assert samples["tgi_request_success"] >= 1
    assert samples["tgi_request_count"] >= samples["tgi_request_success"]
    assert samples["streamgate_engine_generated_tokens_total"] >= 2
    assert samples['streamgate_engine_kv_blocks{state="total"}'] > 0
    assert samples["streamgate_engine_weight_bytes"] == engine.info()["weight_bytes"]


def _dropped(engine: Engine) -> float:
    return engine.metrics()['tgi_request_failure{err="dropped"}']


async def test_stream_disconnect_aborts_the_sequence(
    engine: Engine, wait: Callable[..., None]
) -> None:
    prompt = engine.long_running_prompt(400)
    wait(engine.idle, "the engine to be idle")
    dropped = _dropped(engine)
    aborted = engine.metrics()["streamgate_engine_aborted_total"]
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 400}}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        resp = await session.post(engine.url + "/generate_stream", json=body)
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data:{")
        assert json.loads(first[len(b"data:") :])["index"] == 1
        resp.close()  # drop the connection mid-stream
    # Waiting blocks this test's event loop: fine, nothing of it runs any more.
    wait(lambda: _dropped(engine) == dropped + 1, "tgi_request_failure{err=dropped} to rise")
    wait(engine.idle, "the KV blocks of the dropped stream to be freed")
    assert engine.metrics()["streamgate_engine_aborted_total"] == aborted + 1


async def test_non_stream_disconnect_aborts_the_sequence(
    engine: Engine, wait: Callable[..., None]
) -> None:
    prompt = engine.long_running_prompt(400)
    wait(engine.idle, "the engine to be idle")
    dropped = _dropped(engine)
    aborted = engine.metrics()["streamgate_engine_aborted_total"]
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 400}}).encode()
    host, port = engine.url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    wait(lambda: engine.metrics()["streamgate_engine_running_sequences"] == 1, "the request to run")
    writer.close()
    await writer.wait_closed()
    wait(lambda: _dropped(engine) == dropped + 1, "tgi_request_failure{err=dropped} to rise")
    wait(engine.idle, "the KV blocks of the dropped request to be freed")
    assert engine.metrics()["streamgate_engine_aborted_total"] == aborted + 1


def test_cli_has_a_flag_for_every_config_field() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamgate", "engine", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    renamed = {"enable_prefix_caching": "--no-prefix-caching"}
    for field in dataclasses.fields(EngineConfig):
        flag = renamed.get(field.name, "--" + field.name.replace("_", "-"))
        assert flag in out, flag


def test_write_tiny_model_and_serve_it(tmp_path: Path, start_engine: Callable[..., Engine]) -> None:
    model = tmp_path / "model"
    shape = ["--hidden-size", "64", "--intermediate-size", "160", "--num-layers", "2"]
    shape += ["--num-heads", "4", "--num-kv-heads", "1", "--seed", "3"]
    subprocess.run(
        [sys.executable, "-m", "streamgate", "write-tiny-model", str(model), *shape],
        check=True,
        timeout=300,
    )
    config = json.loads((model / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 64
    engine = start_engine("--model", str(model), "--model-id", "mine")
    assert engine.info()["model_id"] == "mine"
    response = Client(engine.url, timeout=120).generate("Hello", max_new_tokens=5)
    assert 1 <= response.details.generated_tokens <= 5
    engine.process.send_signal(signal.SIGTERM)
    assert engine.process.wait(60) == 0, engine.log_text()


def test_engine_exits_cleanly_on_sigint(start_engine: Callable[..., Engine]) -> None:
    """Ctrl-C stops the engine like SIGTERM does (the test above stops with SIGTERM)."""
    engine = start_engine()
    engine.process.send_signal(signal.SIGINT)
    assert engine.process.wait(60) == 0, engine.log_text()


async def test_details_report_cached_prompt_tokens(engine: Engine) -> None:
    # 11 shared blocks of 16 tokens (BOS + bytes): the second request skips their prefill.
    prefix = "cache me " * 20
    body = {"inputs": prefix + "one", "parameters": {"max_new_tokens": 2, "details": True}}
    status, _, first = engine.post("/generate", body)
    assert status == 200 and first["details"]["cached_tokens"] == 0
    body["inputs"] = prefix + "two"
    _, raw = await stream_bytes(f"{engine.url}/generate_stream", body)
    last = parse_events(raw)[-1]
    assert last["details"]["cached_tokens"] == 176
