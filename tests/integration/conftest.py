"""Real `streamgate engine` processes on loopback for the integration tests, and the fixtures
every gateway test module shares (the fake TGI, a pool of gateway processes).

Each engine is started as `python -m streamgate engine --port 0 ...`; the fixture reads the URL the
server prints once it listens, waits for /health, and terminates the process at the end. The
process log is kept in a temporary file and shown when an engine fails to come up.

Helpers are methods of the `Engine` fixture objects (test modules cannot import this file as a
module: tests/ has no packages).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer
from test_gateway_support import Fake, Gateway, free_port, gateway_pool, start_fake

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


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `predicate()` until true; fail with `what` after `timeout` (a bound, not a check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# The package's source root: the engine runs from this checkout even if not pip-installed.
_SOURCE_ROOT = Path(__file__).resolve().parents[2] / "server"


def _start(log: Path, args: tuple[str, ...]) -> Engine:
    path = os.pathsep.join(p for p in (str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
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
    _stop(engine)
    pytest.fail(f"engine did not become healthy; log:\n{engine.log_text()}")


def _stop(engine: Engine) -> None:
    """SIGTERM, then SIGKILL if the engine does not exit in time."""
    if engine.process.poll() is None:
        engine.process.send_signal(signal.SIGTERM)
        try:
            engine.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The shared engine: tiny model, max_input_tokens 256, max_total_tokens 512."""
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    eng = _start(log, ("--max-input-tokens", "256", "--max-total-tokens", "512"))
    yield eng
    _stop(eng)


@pytest.fixture(scope="session")
def url(engine: Engine) -> str:
    """Base URL of the shared engine."""
    return engine.url


@pytest.fixture(scope="session")
def limited_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine that is easy to fill: two request slots, one sequence per step, best_of <= 2,
    keep-alive comments after 10 ms without an event."""
    log = tmp_path_factory.mktemp("limited") / "engine.log"
    eng = _start(
        log,
        (
            "--max-concurrent-requests",
            "2",
            "--max-batch-size",
            "1",
            "--max-best-of",
            "2",
            "--keep-alive-seconds",
            "0.01",
            "--max-total-tokens",
            "1024",
        ),
    )
    yield eng
    _stop(eng)


def _engines(directory: Path) -> Iterator[Callable[..., Engine]]:
    started: list[Engine] = []

    def start(*args: str) -> Engine:
        eng = _start(directory / f"engine-{len(started)}.log", args)
        started.append(eng)
        return eng

    yield start
    for eng in started:
        _stop(eng)


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start extra engines (`start_engine("--model", dir)`); each is stopped after the test."""
    yield from _engines(tmp_path)


@pytest.fixture(scope="module")
def module_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Engine]]:
    """Like `start_engine`, but the engines live until the end of the module."""
    yield from _engines(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def wait() -> Callable[..., None]:
    """`wait(predicate, what, timeout=60)`: poll until true, fail after the timeout."""
    return wait_for


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    """The fault-injecting fake TGI (tests/fake_tgi.py), one process per test module."""
    fake = start_fake(tmp_path_factory.mktemp("fake") / "fake.log")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, one per test module."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """`gateways(config, name)` starts a gateway process; all stop at the end of the module
    (modules that need a fresh gateway per test override this with a function-scoped one)."""
    with gateway_pool(tmp_path_factory.mktemp("gateways")) as start:
        yield start
