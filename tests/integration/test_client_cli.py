"""The client CLI against a real gateway: `python -m streamgate serve` with its embedded engine.

One gateway (and so one embedded tiny-model engine) serves the whole module on a free loopback
port (`STREAMGATE_LISTEN__PORT`); `streamgate generate`, `models` and `chat` run as separate
processes against it, as a user would run them. Every wait is bounded; nothing asserts on time.

Until the gateway exists (no `streamgate.gateway.app` module) the module is skipped; once it
exists these tests run.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from streamgate.client import Client, StreamDelta

if importlib.util.find_spec("streamgate.gateway.app") is None:
    pytest.skip(
        "streamgate.gateway.app is missing: the gateway server is not written yet",
        allow_module_level=True,
    )

STARTUP_TIMEOUT = 240.0  # gateway + embedded engine: torch import and model load on a busy CI box
COMMAND_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
_SOURCE_ROOT = Path(__file__).resolve().parents[2] / "server"
_LISTENING = re.compile(r"streamgate listening on (\S+):(\d+)")
_STATS = re.compile(r"\[(\d+) prompt \+ (\d+) generated tokens \| ")
PROMPT = "Once upon a time"


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(_SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **extra}
    env.pop("STREAMGATE_API_KEY", None)  # the embedded default needs no key
    env.pop("STREAMGATE_TARGET", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Gateway:
    target: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: the gateway stops its engine), then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    port = _free_port()
    env = _env(
        STREAMGATE_LISTEN__PORT=str(port),
        # The metrics port is fixed by default: another gateway on this machine may hold it.
        STREAMGATE_METRICS__ENABLED="false",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamgate", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    gw = Gateway(f"127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _LISTENING.search(gw.log_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start; log:\n{gw.log_text()}")
            time.sleep(0.1)
        match = _LISTENING.search(gw.log_text())
        assert match is not None
        assert int(match.group(2)) == port
        with grpc.insecure_channel(gw.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_TIMEOUT)
        yield gw
    finally:
        _stop(process)


def streamgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `python -m streamgate ARGS` to completion (bounded) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "streamgate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_env(),
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _stats(stderr: str) -> list[tuple[int, int]]:
    """(prompt tokens, generated tokens) of each stats line."""
    return [(int(p), int(g)) for p, g in _STATS.findall(stderr)]


def _explain(result: subprocess.CompletedProcess[str], gateway: Gateway) -> str:
    return f"rc={result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}\n" + (
        f"gateway log:\n{gateway.log_text()[-4000:]}"
    )


def test_gateway_app_exposes_serve() -> None:
    app = importlib.import_module("streamgate.gateway.app")
    assert inspect.iscoroutinefunction(app.serve)


def test_generate_streams_the_reply(gateway: Gateway) -> None:
    args: Sequence[str] = ("--target", gateway.target, "--max-new-tokens", "8")
    result = streamgate("generate", *args, PROMPT)
    assert result.returncode == 0, _explain(result, gateway)
    [(prompt_tokens, generated)] = _stats(result.stderr)
    assert prompt_tokens > 0
    assert 1 <= generated <= 8
    assert "TTFT" in result.stderr
    # Greedy, so the same request through the Python client streams the same text.
    with (
        Client(gateway.target, timeout=COMMAND_TIMEOUT) as client,
        client.generate_stream(PROMPT, max_new_tokens=8) as stream,
    ):
        text = "".join(e.text for e in stream if isinstance(e, StreamDelta))
    assert result.stdout == text + ("" if text.endswith("\n") else "\n")


def test_generate_reports_errors_in_one_line(gateway: Gateway) -> None:
    result = streamgate("generate", "--target", gateway.target, "--max-new-tokens", "0", PROMPT)
    assert result.returncode == 1, _explain(result, gateway)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("streamgate generate: INVALID_ARGUMENT")
    assert "stopping.max_new_tokens" in result.stderr

    result = streamgate("generate", "--target", gateway.target, "--model", "no-such-route", "hi")
    assert result.returncode == 1, _explain(result, gateway)
    assert result.stderr.startswith("streamgate generate: NOT_FOUND"), result.stderr


def test_models_lists_the_embedded_route(gateway: Gateway) -> None:
    result = streamgate("models", "--target", gateway.target)
    assert result.returncode == 0, _explain(result, gateway)
    header, *rows = result.stdout.splitlines()
    assert header.startswith("ROUTE")
    assert rows, result.stdout
    defaults = [row.split()[0] for row in rows if row.split()[1:2] == ["*"]]
    assert len(defaults) == 1, result.stdout
    with Client(gateway.target, timeout=COMMAND_TIMEOUT) as client:
        assert [m.name for m in client.list_models() if m.default] == defaults


def test_chat_keeps_the_conversation(gateway: Gateway) -> None:
    args = ("--target", gateway.target, "--max-new-tokens", "4", "--stats")
    # The second message is much shorter than the first: only a conversation sent again (first
    # message, reply, second message) makes the second prompt longer than the first exchange.
    stdin = "Hello there, how are you doing today?\nWhy?\n"  # then EOF
    result = streamgate("chat", *args, stdin=stdin)
    assert result.returncode == 0, _explain(result, gateway)
    turns = _stats(result.stderr)
    assert len(turns) == 2, result.stderr
    (first_prompt, _), (second_prompt, _) = turns
    assert second_prompt > first_prompt
    assert "streamgate chat:" not in result.stderr  # no error line
