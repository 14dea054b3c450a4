"""streamgate_client.cli: the generate | chat | models commands against the stub service.

Every test runs both programs: `streamgate-client` and `streamgate`, whose command line registers
the very same commands, so flags, output and exit codes must be identical (error lines start with
the program's name). Commands run in a worker thread (`asyncio.to_thread`) so the stub keeps
serving; the Ctrl-C tests run the program as a real process.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from streamgate import cli as server_cli
from streamgate_client import cli as client_cli
from support.processes import subprocess_env
from support.stub_generation import WAIT, Stub, request_of


@dataclass(frozen=True)
class Program:
    """A command line that has the client commands: its name, module and entry point."""

    name: str
    module: str
    main: Callable[[Sequence[str] | None], int]


PROGRAMS = [
    Program("streamgate-client", "streamgate_client", client_cli.main),
    Program("streamgate", "streamgate", server_cli.main),
]


@pytest.fixture(params=PROGRAMS, ids=[p.name for p in PROGRAMS])
def program(request: pytest.FixtureRequest) -> Program:
    """Each test runs once per program."""
    chosen: Program = request.param
    return chosen


async def _main(program: Program, argv: Sequence[str]) -> int:
    """`PROGRAM ARGV` in a worker thread; its exit code."""
    return await asyncio.to_thread(program.main, list(argv))


async def test_generate_streams_text_and_stats(
    program: Program, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--target", stub.target, "--max-new-tokens", "0", "--seed", "7"]
    assert await _main(program, [*argv, "--stop", "x", "hello world"]) == 0
    out, err = capsys.readouterr()
    assert out == "hello world \n"
    assert err.startswith("[3 prompt + 2 generated tokens | TTFT ")
    assert err.rstrip().endswith("| length]")
    request = request_of(stub)
    assert request.stopping.max_new_tokens == 0
    assert request.stopping.HasField("max_new_tokens")
    assert request.sampling.seed == 7
    assert not request.sampling.HasField("temperature")
    assert list(request.stopping.stop_sequences) == ["x"]


async def test_generate_api_key_from_env(
    program: Program,
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMGATE_API_KEY", "sk-env")
    assert await _main(program, ["generate", "--target", stub.target, "--no-stats", "hi"]) == 0
    assert capsys.readouterr() == ("hi \n", "")
    assert stub.servicer.metadata[-1]["authorization"] == "Bearer sk-env"


async def test_generate_error_is_one_line_and_exits_1(
    program: Program, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(program, ["generate", "--target", stub.target, "invalid"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"{program.name} generate: INVALID_ARGUMENT INVALID_FIELD: ")
    assert "stopping.max_new_tokens: must be at least 1" in err


async def test_generate_error_mid_stream(
    program: Program, stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(program, ["generate", "--target", stub.target, "midstream"]) == 1
    out, err = capsys.readouterr()
    assert out == "ab\n"
    assert err.startswith(f"{program.name} generate: UNAVAILABLE BACKEND_STREAM_BROKEN: ")
    assert "[request req-1]" in err


async def test_chat_keeps_the_conversation(
    program: Program,
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nhow are you?\n"))
    argv = ["chat", "--target", stub.target, "--system", "be brief", "--stats"]
    assert await _main(program, argv) == 0  # EOF quits
    out, err = capsys.readouterr()
    assert out == "turn 1\nturn 2\n"
    assert err.count("generated tokens") == 2
    first, second = stub.servicer.requests
    assert [(m.role, m.content) for m in second.chat.messages] == [
        ("system", "be brief"),
        ("user", "hello"),
        ("assistant", "turn 1"),
        ("user", "how are you?"),
    ]
    assert len(first.chat.messages) == 2


async def test_chat_exit_command_and_error(
    program: Program,
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n/exit\nnever sent\n"))
    assert await _main(program, ["chat", "--target", stub.target]) == 0
    assert capsys.readouterr().out == "turn 1\n"
    assert len(stub.servicer.requests) == 1

    monkeypatch.setattr("sys.stdin", io.StringIO("exhausted\nnever sent\n"))
    # Not a terminal: an error ends the chat.
    assert await _main(program, ["chat", "--target", stub.target]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{program.name} chat: RESOURCE_EXHAUSTED RATE_LIMITED: ")
    assert len(stub.servicer.requests) == 2


async def test_models(program: Program, stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _main(program, ["models", "--target", stub.target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ROUTE", "BACKEND", "MODELS", "MAX", "INPUT", "MAX", "TOTAL"]
    assert lines[1].split() == ["default", "*", "tiny-model", "256", "512"]
    assert lines[2].split() == ["big", "a,b", "-", "-"]


async def test_unreachable_gateway(
    program: Program, unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(program, ["models", "--target", f"127.0.0.1:{unused_port}"]) == 1
    assert capsys.readouterr().err.startswith(f"{program.name} models: UNAVAILABLE")


class _CtrlCOnRead(io.StringIO):
    def read(self, size: int | None = -1) -> str:
        raise KeyboardInterrupt


async def test_ctrl_c_while_reading_the_prompt_exits_130_quietly(
    program: Program,
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", _CtrlCOnRead())
    assert await _main(program, ["generate", "--target", stub.target, "-"]) == 130
    assert capsys.readouterr() == ("", "\n")
    assert stub.servicer.requests == []


# Ctrl-C: a real process gets SIGINT once the stub is in the middle of its reply.

# Starts the program (argv[1:]) with SIGINT at its default disposition, as from a terminal. A job
# that a non-interactive shell starts in the background (`cmd &` in a script, some CI runners)
# has SIGINT ignored, its children inherit that, and Python then installs no KeyboardInterrupt
# handler: pressing Ctrl-C could not be what these tests check. exec keeps the process id.
_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


async def _interrupted(program: Program, argv: Sequence[str], stdin: bytes) -> tuple[int, str, str]:
    """Run `PROGRAM ARGV`, press Ctrl-C once it has printed the stub's partial reply "ab"
    (the stub then waits for the client to go away), and return (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WITH_DEFAULT_SIGINT,
        sys.executable,
        "-m",
        program.module,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**subprocess_env(), "PYTHONIOENCODING": "utf-8"},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(stdin)  # all of it, then EOF: the commands read lines as they go
        process.stdin.close()
        shown = await asyncio.wait_for(process.stdout.readexactly(2), WAIT)
        assert shown == b"ab"
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, (shown + out).decode(), err.decode()


async def test_ctrl_c_cancels_generate(program: Program, stub: Stub) -> None:
    argv = ["generate", "--target", stub.target, "hang"]
    code, out, err = await _interrupted(program, argv, b"")
    assert code == 130, err
    assert out == "ab\n"
    assert err.startswith("[interrupted | TTFT "), err
    assert "Traceback" not in err
    await asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)


async def test_ctrl_c_stops_a_chat_reply_without_quitting(program: Program, stub: Stub) -> None:
    argv = ["chat", "--target", stub.target]
    code, out, err = await _interrupted(program, argv, b"hang\nnext\n")
    assert code == 0, err
    assert "[stopped]" in err
    await asyncio.wait_for(stub.servicer.cancelled.wait(), WAIT)
    # The shown part of the stopped reply stays in the conversation; the chat goes on.
    assert out == "ab\nturn 2\n"
    last = stub.servicer.requests[-1]
    assert [(m.role, m.content) for m in last.chat.messages] == [
        ("user", "hang"),
        ("assistant", "ab"),
        ("user", "next"),
    ]
