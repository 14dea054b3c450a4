"""A real `redis-server` process on loopback for the tests of the shared cache tier.

No persistence, its own directory, a fixed port (so that a test can stop it and start it again
at the same address, as an outage looks to the gateway). `make test` installs redis-server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer"]

_START_TIMEOUT = 30.0


class RedisServer:
    """`start()`, `stop()` (an outage), `command(...)` (redis-cli), `url`."""

    def __init__(self, directory: Path, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (`make test` installs it)")
        self._binary = binary
        self._directory = directory
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        log = (self._directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self._binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self._directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self._directory}/redis.log")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (the port closes: clients see connection errors)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def command(self, *args: str) -> str:
        """Run one command with redis-cli; its output."""
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True, check=True, text=True, timeout=30,
        )  # fmt: skip
        return done.stdout.strip()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
