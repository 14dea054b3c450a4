"""The fake TGI (support/fake_tgi.py) as a process of the tests, or served by the test's own
event loop (`serve_fake`)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from support import fake_tgi
from support.processes import subprocess_env, terminate, wait_for

__all__ = ["Fake", "LocalFake", "serve_fake", "start_fake"]

_URL = re.compile(r"listening on (http://\S+)")


@dataclass
class Fake:
    """A fake TGI process (modes: see support/fake_tgi.py)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            stats: dict[str, Any] = json.loads(resp.read())
            return stats

    def stop(self) -> None:
        terminate(self.process)


def start_fake(log: Path, *args: str) -> Fake:
    """Start the fake TGI on a free port with extra `args` (e.g. --mode overloaded)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, fake_tgi.__file__, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
    url = ""

    def ready() -> bool:
        nonlocal url
        match = _URL.search(log.read_text(errors="replace"))
        url = match.group(1) if match else ""
        return bool(url) or process.poll() is not None

    wait_for(ready, "the fake TGI to listen")
    if not url:
        pytest.fail(f"fake TGI did not start; log:\n{log.read_text(errors='replace')}")
    return Fake(url, process, log)


@dataclass
class LocalFake:
    """A fake TGI served in the test's event loop, and its live counters."""

    url: str
    stats: fake_tgi.Stats


@contextlib.asynccontextmanager
async def serve_fake(default: fake_tgi.Behaviour | None = None) -> AsyncIterator[LocalFake]:
    """The fake TGI on a free loopback port of this event loop, answering as `default` (else
    the fake's defaults) unless a prompt says otherwise (modes: see support/fake_tgi.py)."""
    app = fake_tgi.create_app(default or fake_tgi.Behaviour())
    # As the script runs it: a client that leaves cancels its handler (a disconnect).
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield LocalFake(f"http://{host}:{port}", app[fake_tgi.FAKE].stats)
    finally:
        await runner.cleanup()
