"""`streamgate engine` processes on loopback, and small blocking HTTP helpers against them.

Each engine is started as `python -m streamgate engine --port 0 ...`; the URL the server prints
once it listens is read, /health is awaited, and the process is terminated at the end. The
process log is kept in a file and shown when an engine fails to come up.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.processes import subprocess_env

__all__ = ["Engine", "start_engine_process", "stop_engine_process"]

STARTUP_TIMEOUT = 180.0  # torch import and model load on a slow, shared CI machine
STOP_TIMEOUT = 30.0
_URL_LINE = re.compile(r"listening on (http://\S+)")

_CANDIDATE_PROMPTS = [
    "Once upon a time",
    "The quick brown fox",
    "def main():",
    "Hello, world!",
    "In 1492, Columbus",
    "import numpy as np",
    "Dear Sir or Madam,",
    "The weather today is",
    "SELECT * FROM users",
    "To be or not to be",
    "Lorem ipsum dolor sit amet",
    "Q: What is 2+2?\nA:",
]


@dataclass
class Engine:
    """A running engine process and small blocking HTTP helpers against it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    _long_prompts: dict[int, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def post(self, path: str, body: object, timeout: float = 300) -> tuple[int, Any, Any]:
        """POST JSON: (status, headers, parsed JSON body), error statuses included."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, resp.headers, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, json.loads(err.read())

    def info(self) -> dict[str, Any]:
        status, raw = self.get("/info")
        assert status == 200, raw
        info: dict[str, Any] = json.loads(raw)
        return info

    def tokenize(self, text: str) -> list[dict[str, Any]]:
        status, _, tokens = self.post("/tokenize", {"inputs": text})
        assert status == 200, tokens
        assert isinstance(tokens, list)
        return tokens

    def metrics(self) -> dict[str, float]:
        """/metrics samples as {'name{labels}': value}."""
        status, raw = self.get("/metrics")
        assert status == 200
        samples = {}
        for line in raw.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def idle(self) -> bool:
        """No request in flight, no sequence queued or running, no KV block held."""
        m = self.metrics()
        return (
            m["streamgate_engine_requests_in_flight"] == 0
            and m['streamgate_engine_kv_blocks{state="used"}'] == 0
            and m["tgi_queue_size"] == 0
            and m["tgi_batch_current_size"] == 0
        )

    def long_running_prompt(self, tokens: int) -> str:
        """A prompt whose greedy generation does not stop before `tokens` tokens.

        The tiny model has random weights: greedy output may hit EOS at any step. Tests that
        need a request to stay in flight (overload, disconnects) use a prompt checked here to
        run to `length`, which makes its duration a matter of engine steps, not luck.
        """
        if tokens in self._long_prompts:
            return self._long_prompts[tokens]
        for prompt in _CANDIDATE_PROMPTS:
            params = {"max_new_tokens": tokens, "details": True}
            status, _, body = self.post("/generate", {"inputs": prompt, "parameters": params})
            assert status == 200, body
            if body["details"]["finish_reason"] == "length":
                self._long_prompts[tokens] = prompt
                return prompt
        pytest.fail(f"no candidate prompt generates {tokens} tokens without EOS")


def start_engine_process(log: Path, args: tuple[str, ...]) -> Engine:
    """`streamgate engine --port 0 ARGS`, healthy (its output goes to `log`)."""
    env = subprocess_env()
    command = [sys.executable, "-m", "streamgate", "engine", "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    engine = Engine("", process, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        match = _URL_LINE.search(engine.log_text())
        if match:
            engine.url = match.group(1)
            try:
                if engine.get("/health")[0] == 200:
                    return engine
            except OSError:
                pass
        time.sleep(0.1)
    stop_engine_process(engine)
    pytest.fail(f"engine did not become healthy; log:\n{engine.log_text()}")


def stop_engine_process(engine: Engine) -> None:
    """SIGTERM, then SIGKILL if the engine does not exit in time."""
    if engine.process.poll() is None:
        engine.process.send_signal(signal.SIGTERM)
        try:
            engine.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait(STOP_TIMEOUT)
