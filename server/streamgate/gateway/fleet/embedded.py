"""The embedded engine: `streamgate engine` as a child process when no backends are configured.

The child is started with the tiny model on a free loopback port; its URL is read from the line
it prints once it listens, and it counts as started when `/health` answers 200. It is stopped
with SIGTERM, then SIGKILL after a timeout.

It never outlives the gateway: on Linux the kernel kills it when the gateway dies, however it
dies (PR_SET_PDEATHSIG, set in the child between fork and exec; the kernel watches the thread
that started the child, so start it from the thread that runs the gateway's event loop). It
runs in its own process group, so a Ctrl-C in a terminal reaches only the gateway, which drains
its streams first and then stops the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from streamgate.config import EmbeddedConfig
from streamgate.telemetry.logging import get_logger

__all__ = ["EmbeddedEngine", "EmbeddedEngineError"]

log = get_logger(__name__)

_URL_LINE = re.compile(rb"listening on (http://\S+)")
_PR_SET_PDEATHSIG = 1
_OUTPUT_LINES = 40  # kept for the error message when the engine fails to start


class EmbeddedEngineError(RuntimeError):
    """The engine did not start (the message carries the end of its output)."""


def _death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to load after it
    except OSError:
        return None
    prctl = libc.prctl

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


class EmbeddedEngine:
    """A `streamgate engine` child process (`async with` or start()/stop())."""

    def __init__(self, config: EmbeddedConfig) -> None:
        self._config = config
        self._process: asyncio.subprocess.Process | None = None
        self._output: deque[bytes] = deque(maxlen=_OUTPUT_LINES)
        self._reader: asyncio.Task[None] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        """The child's process id (None before start)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> str:
        """Start the engine and wait until it is healthy; returns its URL.

        Raises EmbeddedEngineError if it exits, or is not healthy within the startup timeout.
        """
        cfg = self._config
        command = [
            sys.executable, "-m", "streamgate", "engine",
            "--model", cfg.model, "--host", "127.0.0.1", "--port", "0", *cfg.args,
        ]  # fmt: skip
        log.info("starting the embedded engine", command=" ".join(command))
        self._process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
            preexec_fn=_death_signal(),
        )
        url_found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_output(url_found), name="engine-output")
        try:
            async with asyncio.timeout(cfg.startup_timeout_seconds):
                self.url = await url_found
                await self._wait_healthy()
        except (TimeoutError, EmbeddedEngineError) as err:
            await self.stop()
            reason = "did not start in time" if isinstance(err, TimeoutError) else str(err)
            output = b"".join(self._output).decode(errors="replace")
            raise EmbeddedEngineError(
                f"the embedded engine {reason}; its output:\n{output}"
            ) from None
        log.info("embedded engine ready", url=self.url, pid=self._process.pid)
        return self.url

    async def _read_output(self, url_found: asyncio.Future[str]) -> None:
        """Read the child's output: find the URL, keep the last lines, log the rest."""
        process = self._process
        assert process is not None and process.stdout is not None
        async for line in process.stdout:
            self._output.append(line)
            if not url_found.done():
                match = _URL_LINE.search(line)
                if match:
                    url_found.set_result(match.group(1).decode())
                continue
            # After startup the engine logs access lines (debug here) and problems (kept).
            text = line.decode(errors="replace").rstrip()
            if b" WARNING " in line or b" ERROR " in line or b"Traceback" in line:
                log.warning("engine", line=text)
            else:
                log.debug("engine", line=text)
        if not url_found.done():
            code = await process.wait()
            url_found.set_exception(EmbeddedEngineError(f"exited with code {code}"))

    async def _wait_healthy(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise EmbeddedEngineError(f"exited with code {self._process.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM, wait up to the stop timeout, then SIGKILL (the whole process group)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            started = time.monotonic()
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._config.stop_timeout_seconds)
            except TimeoutError:
                log.warning("the embedded engine ignored SIGTERM; killing it", pid=process.pid)
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
            log.info(
                "embedded engine stopped",
                code=process.returncode,
                seconds=round(time.monotonic() - started, 3),
            )
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})

    async def __aenter__(self) -> EmbeddedEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The child leads its own group (start_new_session): reach anything it started as well.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
