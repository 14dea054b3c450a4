"""The engine serving SmolLM2-135M-Instruct from its packaged Q4_1 GGUF, over TGI's HTTP API.

One engine process for the module (the model loads in a few seconds); a handful of short
greedy generations, each prompt rendered with the chat template the engine reports in /info.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from support.engines import Engine

MODEL = "smollm2-135m-instruct"
FRANCE = "What is the capital of France? Answer in one sentence."
COUNT = "Count from 1 to 20, separated by commas."


@pytest.fixture(scope="module")
def smollm2(module_engines: Callable[..., Engine]) -> Engine:
    return module_engines("--model", MODEL, "--max-total-tokens", "1024")


def chat(engine: Engine, question: str) -> str:
    """`question` as a user turn, rendered with the model's own template (as the gateway does)."""
    info = engine.info()
    template = ImmutableSandboxedEnvironment().from_string(info["chat_template"])
    return template.render(
        messages=[{"role": "user", "content": question}],
        add_generation_prompt=True,
        bos_token=info["bos_token"],
        eos_token=info["eos_token"],
    )


def generate(engine: Engine, inputs: str, **parameters: Any) -> dict[str, Any]:
    status, _, body = engine.post(
        "/generate", {"inputs": inputs, "parameters": {"details": True, **parameters}}
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def test_info_reports_the_model_and_its_chat_template(smollm2: Engine) -> None:
    info = smollm2.info()
    assert info["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info["quantize"] == "Q4_1"
    assert info["bos_token"] == "<|im_start|>" and info["eos_token"] == "<|im_end|>"
    assert info["chat_template"].startswith("{% for message in messages %}")
    assert "<|im_start|>" in info["chat_template"]
    assert info["max_input_tokens"] == 1023 and info["max_total_tokens"] == 1024
    # 4-bit layers (~66 MB), the Q8_0 embedding and tied head as one int8 table (~30 MB; 113 MB
    # in float32): 97 MB measured.
    assert 80e6 < info["weight_bytes"] < 120e6


def test_it_knows_the_capital_of_france(smollm2: Engine) -> None:
    body = generate(smollm2, chat(smollm2, FRANCE), max_new_tokens=32)
    assert "Paris" in body["generated_text"], body["generated_text"]
    assert body["details"]["finish_reason"] == "eos_token"  # <|im_end|> stops it
    assert "<|im_end|>" not in body["generated_text"]


def test_stop_sequences_and_max_new_tokens(smollm2: Engine) -> None:
    prompt = chat(smollm2, COUNT)
    free = generate(smollm2, prompt, max_new_tokens=40)["generated_text"]
    assert "5" in free  # the stop sequence below is really in the answer
    stopped = generate(smollm2, prompt, max_new_tokens=40, stop=["5"])
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert stopped["generated_text"] == free[: free.index("5") + 1]
    capped = generate(smollm2, prompt, max_new_tokens=3)
    assert capped["details"]["finish_reason"] == "length"
    assert capped["details"]["generated_tokens"] == 3
    assert free.startswith(capped["generated_text"])


async def test_cancelling_mid_answer_frees_the_sequence(
    smollm2: Engine, wait: Callable[..., None]
) -> None:
    wait(smollm2.idle, "the engine to be idle")
    aborted = smollm2.metrics()["streamgate_engine_aborted_total"]
    body = {"inputs": chat(smollm2, "Count from 1 to 300."), "parameters": {"max_new_tokens": 400}}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        resp = await session.post(smollm2.url + "/generate_stream", json=body)
        for index in (1, 2, 3):
            event = await resp.content.readuntil(b"\n\n")
            assert json.loads(event[len(b"data:") :])["index"] == index
        assert smollm2.metrics()["tgi_batch_current_size"] == 1
        assert smollm2.metrics()['streamgate_engine_kv_blocks{state="used"}'] > 0
        resp.close()  # the client leaves mid-answer
    wait(smollm2.idle, "the sequence to leave the batch and its KV blocks to be freed")
    assert smollm2.metrics()["streamgate_engine_aborted_total"] == aborted + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", MODEL, "--quantize", "int4"],
            "is already quantized (F32, Q4_1, Q8_0); it runs as it is",
        ),
        (["--model", "/no/such/model.gguf"], "no model '/no/such/model.gguf'"),
    ],
)
def test_a_model_that_cannot_run_fails_at_start_in_one_line(args: list[str], message: str) -> None:
    command = [sys.executable, "-m", "streamgate", "engine", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("streamgate engine: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
