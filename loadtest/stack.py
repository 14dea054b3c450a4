"""The system under test: a gateway on loopback in front of a paced fake TGI (or the embedded
engine), started as processes and stopped when the `with start_stack(...)` block ends.

The gateway runs as in production (`python -m streamgate serve --config FILE`), with API keys
on: one tenant whose key is a fresh random value passed in the environment (`API_KEY_ENV`), as
a deployment would pass it. The fake TGI (tests/support/fake_tgi.py) paces its tokens like a
model (`Pacing`), so that what a load test measures is the gateway, not the model.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadtest.bench_gateway import free_port, wait_port
from loadtest.prometheus import Samples, scrape

__all__ = [
    "API_KEY_ENV",
    "ROOT",
    "ROUTE",
    "Pacing",
    "Stack",
    "StackError",
    "StackOptions",
    "child_env",
    "start_bare_server",
    "start_stack",
]

ROOT = Path(__file__).resolve().parent.parent
FAKE_TGI = ROOT / "tests" / "support" / "fake_tgi.py"

API_KEY_ENV = "LOADTEST_API_KEY"
"""The environment variable holding the API key: the gateway hashes it at start (`key_env`),
ghz reads it in its metadata template, the load generator through `--api-key-env`."""
TENANT = "loadtest"
ROUTE = "paced"

STARTUP_TIMEOUT = 180.0  # the embedded engine imports torch and loads its model
STOP_TIMEOUT = 60.0
_GATEWAY_READY = re.compile(r"streamgate listening on (\S+) \(routes: .*?; metrics: ([^\s)]+)\)")
_FAKE_READY = re.compile(r"fake tgi listening on (http://\S+)")


class StackError(RuntimeError):
    """A process of the stack did not start; the message has the end of its log."""


@dataclass(frozen=True)
class Pacing:
    """How the fake TGI streams: by default like a model at 50 tokens/s per stream whose
    continuous batching gives every running stream its token at the same step."""

    ttft: float = 0.1
    """Seconds before the first token."""
    itl: float = 0.02
    """Seconds between tokens (one engine step)."""
    lockstep: bool = True
    """Every stream's tokens fall on the same step clock (a batching engine); False: each
    stream sleeps on its own."""

    def args(self) -> list[str]:
        """The fake TGI's command-line flags."""
        args = ["--ttft", str(self.ttft), "--token-delay", str(self.itl)]
        return [*args, "--lockstep"] if self.lockstep else args

    def describe(self) -> str:
        steps = "lockstep" if self.lockstep else "per stream"
        return f"fake TGI: TTFT {self.ttft * 1e3:g} ms, {self.itl * 1e3:g} ms/token ({steps})"


@dataclass(frozen=True)
class StackOptions:
    """What to start, and where its logs go."""

    out: Path
    backend: Literal["fake", "embedded"] = "fake"
    pacing: Pacing = field(default_factory=Pacing)
    gateway_cpus: str | None = None
    """CPUs the gateway may run on (`taskset -c` syntax, e.g. "0"); None: any."""
    backend_cpus: str | None = None


@dataclass
class Stack:
    """A started gateway and its backend."""

    address: str
    metrics_url: str
    backend_url: str
    api_key: str
    gateway_pid: int
    description: str

    def gateway_metrics(self) -> Samples:
        """The gateway's /metrics now."""
        return scrape(self.metrics_url)

    def backend_metrics(self) -> Samples:
        """The backend's /metrics now (TGI's gauges: `tgi_batch_current_size`, ...)."""
        return scrape(self.backend_url + "/metrics")

    def client_env(self) -> dict[str, str]:
        """The environment of a client process (ghz): the API key in `API_KEY_ENV`."""
        return {**os.environ, API_KEY_ENV: self.api_key}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process of the stack: this checkout's sources first, and none of
    the shell's STREAMGATE_* overrides (the generated config is the whole configuration)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGATE_")}
    path = os.pathsep.join(p for p in (str(ROOT / "server"), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **extra}


@contextmanager
def start_stack(options: StackOptions) -> Iterator[Stack]:
    """Start the backend (unless embedded) and the gateway; stop both when the block ends."""
    options.out.mkdir(parents=True, exist_ok=True)
    api_key = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        backend_url = ""
        description = "embedded engine (tiny model)"
        if options.backend == "fake":
            fake_cmd = [sys.executable, str(FAKE_TGI), "--port", "0", *options.pacing.args()]
            fake = stack.enter_context(
                _process(fake_cmd, options.out / "fake-tgi", options.backend_cpus, child_env())
            )
            backend_url = _wait_for_line(fake, _FAKE_READY, "fake-tgi.out", 30.0).group(1)
            description = options.pacing.describe()
        config = options.out / "gateway.yaml"  # JSON is YAML
        config.write_text(json.dumps(gateway_config(backend_url), indent=2))
        gateway_cmd = [sys.executable, "-m", "streamgate", "serve", "--config", str(config)]
        env = child_env(**{API_KEY_ENV: api_key})
        gateway = stack.enter_context(
            _process(gateway_cmd, options.out / "gateway", options.gateway_cpus, env)
        )
        ready = _wait_for_line(gateway, _GATEWAY_READY, "gateway.out", STARTUP_TIMEOUT)
        if not backend_url:
            backend_url = _embedded_engine_url(gateway)
        yield Stack(
            address=ready.group(1),
            metrics_url=ready.group(2),
            backend_url=backend_url,
            api_key=api_key,
            gateway_pid=gateway.popen.pid,
            description=description,
        )


@contextmanager
def start_bare_server(out: Path, cpus: str | None = None) -> Iterator[str]:
    """bench_gateway.py's bare grpc.aio server: the gateway's messages (Start, one Delta per
    token, End) with no gateway behind them, as fast as it can send; yields its address."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, str(ROOT / "loadtest" / "bench_gateway.py"), "bare", "--port", str(port)]
    with _process(cmd, out / "bare-server", cpus, child_env()) as bare:
        wait_port(port, bare.popen)
        yield f"127.0.0.1:{port}"


def gateway_config(backend_url: str) -> dict[str, Any]:
    """The gateway's configuration: the fake at `backend_url`, or the embedded engine."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "auth": {"enabled": True},
        "tenants": [{"name": TENANT, "keys": [{"name": "load", "key_env": API_KEY_ENV}]}],
        # Hundreds of streams at once: neither the admission bound nor the connection pool may
        # be what limits a load test.
        "admission": {"max_active_streams": 1024, "max_queued": 4096},
    }
    if not backend_url:
        return {**config, "embedded": {"model": "tiny", "route": ROUTE}}
    backend = {"name": "fake", "url": backend_url, "max_connections": 1024}
    return {**config, "backends": [backend], "routes": [{"name": ROUTE, "backends": ["fake"]}]}


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def _process(
    cmd: list[str], log_stem: Path, cpus: str | None, env: dict[str, str]
) -> Iterator[_Process]:
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    stdout, stderr = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
    try:
        yield _Process(popen, stdout, stderr)
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(STOP_TIMEOUT)


def _wait_for_line(
    process: _Process, pattern: re.Pattern[str], name: str, timeout: float
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(process.stdout.read_text(errors="replace"))
        if match:
            return match
        if process.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise StackError(f"{name}: no ready line within {timeout:g} s; log:\n{process.log_tail()}")


def _embedded_engine_url(gateway: _Process) -> str:
    for line in gateway.stderr.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"embedded engine ready"' in line:
            return str(json.loads(line)["url"])
    raise StackError(f"no 'embedded engine ready' line in the gateway's log:\n{gateway.log_tail()}")
