"""Helpers of the gateway integration tests (no tests here).

The gateway runs as its own process, `python -m streamgate.gateway --config FILE`, exactly as in
production; backends are `streamgate engine` processes (the conftest's engines or the gateway's
embedded one) or the fault-injecting fake TGI (tests/fake_tgi.py), also processes. Test modules
import what they need from here (tests/ has no packages; pytest puts this directory on the path).

Every wait is a bounded poll that fails with a message, never an assertion about time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamgate.api.v1 import generation_pb2 as pb
from streamgate.api.v1 import generation_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOT = ROOT / "server"
FAKE_SCRIPT = ROOT / "tests" / "fake_tgi.py"
STARTUP_TIMEOUT = 180.0  # the embedded engine imports torch and loads its model
STOP_TIMEOUT = 60.0
WAIT_TIMEOUT = 60.0
SERVICE = "streamgate.v1.GenerationService"
_READY = re.compile(
    r"streamgate listening on (\S+) \(routes: .*?(?:; metrics: ([^\s)]+))?\)$", re.M
)
_URL = re.compile(r"listening on (http://\S+)")

# A client that stops reading must not hide it in a large receive window: without BDP probing
# the HTTP/2 window stays at 64 KiB, so the gateway's writes block soon after (as they would
# with a slow client on a real network).
SMALL_WINDOW = (("grpc.http2.bdp_probe", 0),)


def free_port() -> int:
    """A TCP port nothing listens on now (for a backend that is down)."""
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


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    # STREAMGATE_* of the developer's shell must not change what the tests run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGATE_")}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def _terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
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


# ---- the fake TGI ------------------------------------------------------------------------------


@dataclass
class Fake:
    """A fake TGI process (modes: see tests/fake_tgi.py)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            stats: dict[str, Any] = json.loads(resp.read())
            return stats

    def stop(self) -> None:
        _terminate(self.process)


def start_fake(log: Path, *args: str) -> Fake:
    """Start `tests/fake_tgi.py` on a free port with extra `args` (e.g. --mode overloaded)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(FAKE_SCRIPT), "--host", "127.0.0.1", "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
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


# ---- the gateway -------------------------------------------------------------------------------


@dataclass
class Gateway:
    """A gateway process, its address and clients."""

    process: subprocess.Popen[bytes]
    config_path: Path
    stdout: Path
    stderr: Path
    address: str = ""
    metrics_url: str = ""
    _channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self, options: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
        """A new channel to the gateway (closed with the gateway)."""
        channel = grpc.insecure_channel(self.address, options=list(options))
        self._channels.append(channel)
        return channel

    def stub(self, options: tuple[tuple[str, Any], ...] = ()) -> pb_grpc.GenerationServiceStub:
        """A GenerationService stub on a new channel."""
        return pb_grpc.GenerationServiceStub(self.channel(options))

    def health(self, service: str = "") -> int:
        """grpc.health.v1 Check status of `service`."""
        stub = health_pb2_grpc.HealthStub(self.channel())
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        status: int = response.status
        return status

    def metrics(self) -> dict[str, float]:
        """The gateway's /metrics samples as {'name{labels}': value}."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr."""
        lines = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_exit(self) -> int:
        """Wait for the process to end; its exit code."""
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway did not exit; log:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM (then SIGKILL if it hangs); the exit code."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        return _terminate(self.process)


def start_gateway(directory: Path, config: dict[str, Any], name: str = "gateway") -> Gateway:
    """Write `config` (JSON is YAML) and start the gateway on free ports; waits until ready."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "metrics": {"host": "127.0.0.1", "port": 0},
        # Tests repeat identical requests and expect each to reach a backend; the cache tests
        # turn the cache on.
        "cache": {"enabled": False},
        **config,
    }
    config_path = directory / f"{name}.yaml"
    config_path.write_text(json.dumps(config, indent=2))
    stdout, stderr = directory / f"{name}.out", directory / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamgate.gateway", "--config", str(config_path)],
            stdout=out,
            stderr=err,
            env=_env(),
        )
    gateway = Gateway(process, config_path, stdout, stderr)

    def ready() -> bool:
        match = _READY.search(stdout.read_text(errors="replace"))
        if match:
            gateway.address = match.group(1)
            gateway.metrics_url = match.group(2) or ""
            return True
        return process.poll() is not None

    wait_for(ready, "the gateway to listen", STARTUP_TIMEOUT)
    if not gateway.address:
        _terminate(process)
        pytest.fail(f"the gateway did not start; stderr:\n{gateway.logs()}")
    return gateway


@contextmanager
def gateway_pool(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """`with gateway_pool(dir) as start:` `start(config, name)` starts gateways, all stopped at
    the end of the block (test modules wrap it in a fixture)."""
    started: list[Gateway] = []

    def start(config: dict[str, Any], name: str = "gateway") -> Gateway:
        gateway = start_gateway(tmp_path / name, config, name)
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


# ---- reading responses -------------------------------------------------------------------------


@dataclass
class RpcFailure:
    """A failed call's status and google.rpc details."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    violations: list[tuple[str, str]]
    retry_delay: float | None
    trailing: dict[str, str]
    quota: list[tuple[str, str]] = field(default_factory=list)
    """QuotaFailure violations: (subject, description)."""


def failure(err: grpc.RpcError) -> RpcFailure:
    """Decode `err` (a grpc.Call) into its status and details."""
    assert isinstance(err, grpc.Call)
    trailing = {k: v for k, v in (err.trailing_metadata() or ())}
    raw = trailing.get("grpc-status-details-bin")
    reason, metadata, violations, retry = "", {}, [], None
    quota: list[tuple[str, str]] = []
    if raw is not None:
        status = status_pb2.Status.FromString(raw)
        assert status.code == err.code().value[0]
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                assert info.domain == "streamgate.dev"
                reason, metadata = info.reason, dict(info.metadata)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info_retry = error_details_pb2.RetryInfo()
                packed.Unpack(info_retry)
                retry = info_retry.retry_delay.ToTimedelta().total_seconds()
            elif packed.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                info_quota = error_details_pb2.QuotaFailure()
                packed.Unpack(info_quota)
                quota = [(v.subject, v.description) for v in info_quota.violations]
    text = {k: v for k, v in trailing.items() if isinstance(v, str)}
    return RpcFailure(
        err.code(), err.details() or "", reason, metadata, violations, retry, text, quota
    )


@dataclass
class StreamResult:
    """Everything a GenerateStream call returned."""

    start: pb.Start | None
    deltas: list[pb.Delta]
    end: pb.End | None
    initial_metadata: dict[str, str]
    error: RpcFailure | None = None

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


def read_stream(call: Any) -> StreamResult:
    """Read a GenerateStream call to its end (or its error)."""
    result = StreamResult(None, [], None, {})
    try:
        for message in call:
            kind = message.WhichOneof("event")
            if kind == "start":
                assert result.start is None and not result.deltas
                result.start = message.start
            elif kind == "delta":
                assert result.start is not None and result.end is None
                result.deltas.append(message.delta)
            else:
                assert result.end is None
                result.end = message.end
    except grpc.RpcError as err:
        result.error = failure(err)
    result.initial_metadata = {k: v for k, v in (call.initial_metadata() or ())}
    return result


def expect_failure(fn: Callable[[], object]) -> RpcFailure:
    """Run a unary call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        fn()
    return failure(caught.value)


def engine_backend(url: str, name: str = "engine", **extra: Any) -> dict[str, Any]:
    """A backend entry of the gateway config."""
    return {"name": name, "url": url, "health_interval_seconds": 0.5, **extra}
