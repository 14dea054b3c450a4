"""The client's commands against a real gateway: `python -m streamgate serve` with its embedded
engine (the tiny model).

One gateway serves the whole module; `generate`, `models` and `chat` run as separate processes
against it, as a user would run them: as `streamgate COMMAND` and as `streamgate-client COMMAND`
(`python -m streamgate_client`), which must behave the same. Every wait is bounded; nothing
asserts on time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from streamgate_client import Client, StreamDelta
from support.gateways import Gateway
from support.processes import subprocess_env

COMMAND_TIMEOUT = 180.0
_STATS = re.compile(r"\[(\d+) prompt \+ (\d+) generated tokens \| ")
PROMPT = "Once upon a time"
PROGRAMS = {"streamgate": "streamgate", "streamgate-client": "streamgate_client"}


@pytest.fixture(scope="module")
def gateway(gateways: Callable[..., Gateway]) -> Gateway:
    """A gateway with no backends configured: it starts its embedded engine (on the tiny
    model: these tests are about the commands, not the model)."""
    return gateways({"embedded": {"model": "tiny"}})


def run(program: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `PROGRAM ARGS` (`python -m`) to completion (bounded) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", PROGRAMS[program], *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=subprocess_env(),
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _stats(stderr: str) -> list[tuple[int, int]]:
    """(prompt tokens, generated tokens) of each stats line."""
    return [(int(p), int(g)) for p, g in _STATS.findall(stderr)]


def _explain(result: subprocess.CompletedProcess[str], gateway: Gateway) -> str:
    return f"rc={result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}\n" + (
        f"gateway log:\n{gateway.logs()[-4000:]}"
    )


@pytest.mark.parametrize("program", PROGRAMS)
def test_generate_streams_the_reply(gateway: Gateway, program: str) -> None:
    result = run(program, "generate", "--target", gateway.address, "--max-new-tokens", "8", PROMPT)
    assert result.returncode == 0, _explain(result, gateway)
    [(prompt_tokens, generated)] = _stats(result.stderr)
    assert prompt_tokens > 0
    assert 1 <= generated <= 8
    assert "TTFT" in result.stderr
    # Greedy, so the same request through the Python client streams the same text.
    with (
        Client(gateway.address, timeout=COMMAND_TIMEOUT) as client,
        client.generate_stream(PROMPT, max_new_tokens=8) as stream,
    ):
        text = "".join(e.text for e in stream if isinstance(e, StreamDelta))
    assert result.stdout == text + ("" if text.endswith("\n") else "\n")


@pytest.mark.parametrize("program", PROGRAMS)
def test_generate_reports_errors_in_one_line(gateway: Gateway, program: str) -> None:
    result = run(program, "generate", "--target", gateway.address, "--max-new-tokens", "0", PROMPT)
    assert result.returncode == 1, _explain(result, gateway)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{program} generate: INVALID_ARGUMENT")
    assert "stopping.max_new_tokens" in result.stderr

    result = run(program, "generate", "--target", gateway.address, "--model", "no-such-route", "hi")
    assert result.returncode == 1, _explain(result, gateway)
    assert result.stderr.startswith(f"{program} generate: NOT_FOUND"), result.stderr


def test_models_lists_the_embedded_route(gateway: Gateway) -> None:
    result = run("streamgate", "models", "--target", gateway.address)
    assert result.returncode == 0, _explain(result, gateway)
    header, *rows = result.stdout.splitlines()
    assert header.startswith("ROUTE")
    assert rows, result.stdout
    defaults = [row.split()[0] for row in rows if row.split()[1:2] == ["*"]]
    assert len(defaults) == 1, result.stdout
    with Client(gateway.address, timeout=COMMAND_TIMEOUT) as client:
        assert [m.name for m in client.list_models() if m.default] == defaults
    assert run("streamgate-client", "models", "--target", gateway.address).stdout == result.stdout


def test_chat_keeps_the_conversation(gateway: Gateway) -> None:
    args = ("--target", gateway.address, "--max-new-tokens", "4", "--stats")
    # The second message is much shorter than the first: only a conversation sent again (first
    # message, reply, second message) makes the second prompt longer than the first exchange.
    stdin = "Hello there, how are you doing today?\nWhy?\n"  # then EOF
    result = run("streamgate", "chat", *args, stdin=stdin)
    assert result.returncode == 0, _explain(result, gateway)
    turns = _stats(result.stderr)
    assert len(turns) == 2, result.stderr
    (first_prompt, _), (second_prompt, _) = turns
    assert second_prompt > first_prompt
    assert "streamgate chat:" not in result.stderr  # no error line
