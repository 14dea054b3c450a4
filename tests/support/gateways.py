"""Gateway processes for the integration tests, exactly as in production:
`python -m streamgate serve --config FILE`, on free loopback ports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamgate_client.v1 import generation_pb2_grpc as pb_grpc
from support.processes import STOP_TIMEOUT, subprocess_env, terminate, wait_for

STARTUP_TIMEOUT = 180.0  # the embedded engine imports torch and loads its model
SERVICE = "streamgate.v1.GenerationService"
_READY = re.compile(
    r"streamgate listening on (\S+) \(routes: .*?(?:; metrics: ([^\s)]+))?\)$", re.M
)

# A client that stops reading must not hide it in a large receive window: without BDP probing
# the HTTP/2 window stays at 64 KiB, so the gateway's writes block soon after (as they would
# with a slow client on a real network).
SMALL_WINDOW = (("grpc.http2.bdp_probe", 0),)


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

    def embedded_engine(self) -> tuple[int, str]:
        """The pid and URL of the engine it started (no backends configured)."""
        for line in self.log_lines():
            if line.get("event") == "embedded engine ready":
                return int(line["pid"]), str(line["url"])
        pytest.fail(f"no 'embedded engine ready' line; log:\n{self.logs()}")

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
        return terminate(self.process)


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
            [sys.executable, "-m", "streamgate", "serve", "--config", str(config_path)],
            stdout=out,
            stderr=err,
            env=subprocess_env(),
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
        terminate(process)
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


def engine_backend(url: str, name: str = "engine", **extra: Any) -> dict[str, Any]:
    """A backend entry of the gateway config."""
    return {"name": name, "url": url, "health_interval_seconds": 0.5, **extra}
