"""Start the gateways the conformance suites call, run a command against them, stop them.

    launch.py [--dir DIR] -- COMMAND [ARG...]   run COMMAND with STREAMGATE_CONFORMANCE_ENV set
    launch.py [--dir DIR] --serve               keep them up until Ctrl-C (run suites by hand)

One `streamgate engine` with the built-in `tiny` model serves three gateways, each on free
loopback ports (gRPC and metrics), its response cache off so that every call generates:

    open   no authentication; route `tiny`
    auth   API keys: tenant `acme` may use route `tiny` only (the gateway also serves `tiny-2`),
           tenant `limited` has 1 request a minute; key `stranger` belongs to nobody
    tls    mutual TLS: a CA made at start signs the gateway's and the client's certificates

DIR/env.json (schema in clients/conformance/README.md) tells the suites where everything is;
the processes' logs are in DIR too. DIR defaults to a new temporary directory, removed at the
end unless something failed. The exit code is COMMAND's, or 2 when the gateways did not start.
Run it with the repository's virtualenv (it imports `streamgate` and `cryptography`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamgate.tenancy import hash_key, new_key

ENV_VAR = "STREAMGATE_CONFORMANCE_ENV"
STARTUP_TIMEOUT = 180.0  # torch import and model load on a slow, shared machine
STOP_TIMEOUT = 30.0
ROUTE = "tiny"
_ENGINE_READY = re.compile(r"listening on (http://\S+)")
_GATEWAY_READY = re.compile(r"streamgate listening on (\S+) .*metrics: (http://[^\s)]+)")


class LaunchError(Exception):
    """A process did not come up; the message says which and shows its log."""


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first match of `pattern` in the log (bounded; fails if the process exits)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            match = pattern.search(self.log_text())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise LaunchError(f"{self.name} did not start; its log:\n{self.log_text()[-4000:]}")

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        """Wait for the exit after `terminate`; SIGKILL if it does not come in time."""
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)


class Launch:
    """The processes of one run, stopped in reverse order of start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []

    def start(self, name: str, *args: str) -> Process:
        """`python -m streamgate ARGS`, logging to DIR/NAME.log."""
        log = self.directory / f"{name}.log"
        # The developer's STREAMGATE_* overrides must not change what the suites run against.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGATE_")}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "streamgate", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**env, "PYTHONUNBUFFERED": "1"},
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop the gateways together, then the engine they use (the first one started)."""
        engine, gateways = self.processes[:1], self.processes[1:]
        for group in (gateways, engine):
            for process in group:
                process.terminate()
            for process in group:
                process.wait()


@dataclass(frozen=True)
class Pki:
    """PEM files of the test CA, the gateway's certificate and the client's."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA valid for a day, a server certificate it signs (127.0.0.1, localhost), a client's."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None
    ) -> x509.CertificateBuilder:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        certificate("streamgate conformance CA", ca_key, None)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        certificate("gateway", server_key, ca.subject)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client = certificate("client", client_key, ca.subject).sign(ca_key, hashes.SHA256())
    return Pki(
        ca_file=write("ca", ca, ca_key),
        server_cert=write("gateway", server, server_key),
        server_key=directory / "gateway.key",
        client_cert=write("client", client, client_key),
        client_key=directory / "client.key",
    )


def gateway_configs(engine_url: str, keys: dict[str, str], pki: Pki) -> dict[str, dict[str, Any]]:
    """The configuration of each gateway (docs/operations.md)."""
    backend = {"name": "engine", "url": engine_url, "health_interval_seconds": 0.5}
    base: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "cache": {"enabled": False},
        "backends": [backend],
        "routes": [{"name": ROUTE, "backends": ["engine"]}],
    }

    def tenant(name: str, **settings: Any) -> dict[str, Any]:
        return {
            "name": name,
            "keys": [{"name": "main", "sha256": hash_key(keys[name])}],
            **settings,
        }

    tls = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca_file),
    }
    return {
        "open": base,
        "auth": {
            **base,
            "routes": [*base["routes"], {"name": f"{ROUTE}-2", "backends": ["engine"]}],
            "auth": {"enabled": True},
            "tenants": [
                tenant("acme", routes=[ROUTE]),
                tenant("limited", limits={"requests_per_minute": 1}),
            ],
        },
        "tls": {**base, "listen": {**base["listen"], "tls": tls}},
    }


def metric(url: str, sample: str) -> float | None:
    """One sample of a /metrics page, None when absent or unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def engine_healthy(metrics_url: str) -> bool:
    """The gateway's last health check of the engine passed."""
    return metric(metrics_url, 'streamgate_backend_healthy{backend="engine"}') == 1


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise LaunchError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_all(launch: Launch) -> dict[str, Any]:
    """Start the engine and the gateways; the environment the suites read."""
    directory = launch.directory
    engine = launch.start(
        "engine", "engine", "--host", "127.0.0.1", "--port", "0", "--model", "tiny"
    )
    pki = make_pki(directory)
    keys = {name: new_key() for name in ("acme", "limited", "stranger")}
    engine_url = engine.wait_for_line(_ENGINE_READY).group(1)
    configs = gateway_configs(engine_url, keys, pki)
    gateways: dict[str, Process] = {}
    for name, config in configs.items():  # started together, awaited in turn
        path = directory / f"{name}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        gateways[name] = launch.start(name, "serve", "--config", str(path))
    env: dict[str, Any] = {
        "engine": {"url": engine_url, "metrics_url": f"{engine_url}/metrics"},
        "gateways": {},
        "keys": keys,
    }
    for name, process in gateways.items():
        ready = process.wait_for_line(_GATEWAY_READY)
        entry: dict[str, Any] = {"target": ready.group(1), "metrics_url": ready.group(2)}
        wait_until(
            functools.partial(engine_healthy, entry["metrics_url"]),
            f"gateway {name} to see the engine healthy",
        )
        if name == "tls":
            entry["tls"] = {
                "ca_file": str(pki.ca_file),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            }
        env["gateways"][name] = entry
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start the conformance gateways, run COMMAND against them, stop them.",
        usage="%(prog)s [--dir DIR] (--serve | -- COMMAND [ARG...])",
    )
    parser.add_argument("--dir", type=Path, help="where env.json and the logs go")
    parser.add_argument("--serve", action="store_true", help="run until Ctrl-C or SIGTERM")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if bool(command) == args.serve:
        parser.error("give either --serve or -- COMMAND")

    directory = args.dir or Path(tempfile.mkdtemp(prefix="streamgate-conformance-"))
    directory.mkdir(parents=True, exist_ok=True)
    # SIGTERM (CI, a runner's teardown) stops the processes like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    launch = Launch(directory)
    code = 2
    try:
        env = start_all(launch)
        env_file = directory / "env.json"
        env_file.write_text(json.dumps(env, indent=2))
        print(f"conformance gateways up: {env_file}", flush=True)
        if args.serve:
            print(f"export {ENV_VAR}={env_file}", flush=True)
            signal.pause()
        else:
            code = subprocess.call(command, env={**os.environ, ENV_VAR: str(env_file)})
    except LaunchError as err:
        print(f"launch.py: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        code = 0 if args.serve else 130
    finally:
        launch.stop()
    if code == 0 and args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    elif code != 0:
        print(f"launch.py: the gateways' logs are in {directory}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
