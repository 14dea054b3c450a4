"""Child processes of the tests: the environment they run in, stopping them, free ports, and
bounded waits.

Every wait is a bounded poll that fails with a message, never an assertion about time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = [
    "ROOT",
    "SOURCE_ROOT",
    "free_port",
    "pid_alive",
    "subprocess_env",
    "terminate",
    "wait_for",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOT = ROOT / "server"
STOP_TIMEOUT = 60.0
WAIT_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port nothing listens on now (for a backend that is down, or a server to start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` (a bound only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def wait_until(predicate: Callable[[], object], what: str) -> None:
    """`wait_for` inside an event loop: polls every millisecond, letting other tasks run."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.001)
    pytest.fail(f"timed out waiting for {what}")


def subprocess_env() -> dict[str, str]:
    """The environment of a child process: this checkout's sources first on the path, and no
    STREAMGATE_* of the developer's shell (they must not change what the tests run)."""
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGATE_")}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Send `sig` (SIGKILL if the process does not exit in time); the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
    return process.returncode


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
