"""The shared conformance cases (clients/conformance/cases.yaml) through the Python client.

The Go, TypeScript and Java clients run the same file (`make clients-test`). The gateways come
from clients/conformance/launch.py: started here, or the running set that
STREAMGATE_CONFORMANCE_ENV names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamgate_client import (
    Client,
    StreamDelta,
    StreamEnd,
    StreamgateError,
    StreamStart,
    tls_credentials,
)
from streamgate_client.v1 import generation_pb2 as pb
from support.processes import ROOT, subprocess_env, terminate, wait_for

CONFORMANCE = ROOT / "clients" / "conformance"
SPEC: dict[str, Any] = yaml.safe_load((CONFORMANCE / "cases.yaml").read_text())
ENV_VAR = "STREAMGATE_CONFORMANCE_ENV"
STARTUP_TIMEOUT = 240.0  # the launcher starts an engine (torch) and three gateways


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """env.json of the conformance gateways."""
    if ENV_VAR in os.environ:
        yield json.loads(Path(os.environ[ENV_VAR]).read_text())
        return
    directory = tmp_path_factory.mktemp("conformance")
    env_file, log = directory / "env.json", directory / "launch.out"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, str(CONFORMANCE / "launch.py"), "--dir", str(directory), "--serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )
    try:
        wait_for(
            lambda: env_file.exists() or launcher.poll() is not None,
            "the conformance gateways",
            STARTUP_TIMEOUT,
        )
        if not env_file.exists():
            pytest.fail(f"launch.py failed:\n{log.read_text(errors='replace')}")
        yield json.loads(env_file.read_text())
    finally:
        terminate(launcher)


@dataclass
class Case:
    """One case of the file, with the clients of the run."""

    spec: dict[str, Any]
    env: dict[str, Any]
    clients: dict[tuple[str, ...], Client]

    def __getitem__(self, key: str) -> Any:
        return self.spec[key]

    @property
    def expect(self) -> dict[str, Any]:
        expect: dict[str, Any] = self.spec.get("expect", {})
        return expect

    @property
    def gateway(self) -> dict[str, Any]:
        gateway: dict[str, Any] = self.env["gateways"][self.spec.get("gateway", "open")]
        return gateway

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for the tls gateway: the test CA, or the system's roots."""
        tls = self.gateway.get("tls")
        if tls is None:
            return None
        ca = None if self.spec.get("trust") == "system" else tls["ca_file"]
        return tls_credentials(ca, tls["cert_file"], tls["key_file"])

    def client(self) -> Client:
        """The client for this case's gateway, key and trust (one per combination and run)."""
        key = tuple(str(self.spec.get(k, "")) for k in ("gateway", "api_key", "trust"))
        if key not in self.clients:
            api_key = self.env["keys"][self["api_key"]] if "api_key" in self.spec else None
            self.clients[key] = Client(
                self.gateway["target"], api_key=api_key, credentials=self.credentials()
            )
        return self.clients[key]

    def request(self) -> tuple[str | None, dict[str, Any]]:
        """The case's `request` as `generate()` arguments: the prompt and keyword options."""
        message = json_format.ParseDict(self["request"], pb.GenerateStreamRequest())
        options: dict[str, Any] = {}
        if message.model:
            options["model"] = message.model
        if message.HasField("chat"):
            options["messages"] = [
                {"role": m.role, "content": m.content} for m in message.chat.messages
            ]
        for field, value in message.sampling.ListFields():
            options[field.name] = value
        for field, value in message.stopping.ListFields():
            name = "stop" if field.name == "stop_sequences" else field.name
            options[name] = list(value) if name == "stop" else value
        unsupported = [f for f in ("response", "cache") if message.HasField(f)]
        assert not unsupported, f"python: request fields not supported here: {unsupported}"
        return (message.prompt if message.WhichOneof("input") == "prompt" else None), options

    def metrics(self, source: str) -> dict[str, float]:
        """The samples of the engine's or this case's gateway's /metrics."""
        url = (self.env["engine"] if source == "engine" else self.gateway)["metrics_url"]
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        return {
            name: float(value)
            for name, _, value in (line.rpartition(" ") for line in lines)
            if name and not name.startswith("#")
        }

    def metrics_check(self, phase: str) -> Callable[[], list[str]]:
        """A function that lists the unmet conditions of `metrics.<phase>` (increases counted
        from now)."""
        conditions: dict[str, dict[str, Any]] = self.spec["metrics"][phase]
        before = {source: self.metrics(source) for source in conditions}

        def unmet() -> list[str]:
            problems = []
            for source, samples in conditions.items():
                now = self.metrics(source)
                for sample, want in samples.items():
                    value = now.get(sample)
                    if isinstance(want, dict):
                        got = None if value is None else value - before[source].get(sample, 0)
                        want = want["increase"]
                    else:
                        got = value
                    if got != want:
                        problems.append(f"{source} {sample}: {got} (want {want})")
            return problems

        return unmet


# ---- the kinds ----------------------------------------------------------------------------------


def run_stream(case: Case) -> None:
    prompt, options = case.request()
    with case.client().generate_stream(prompt, **options) as stream:
        events = list(stream)
    assert isinstance(events[0], StreamStart), events[:1]
    assert isinstance(events[-1], StreamEnd), events[-1:]
    deltas = events[1:-1]
    assert deltas and all(isinstance(e, StreamDelta) for e in deltas), events
    end = events[-1]
    assert end.usage.prompt_tokens > 0
    expect = case.expect
    if "finish_reason" in expect:
        assert f"FINISH_REASON_{end.finish_reason.upper()}" == expect["finish_reason"]
    if "completion_tokens" in expect:
        assert end.usage.completion_tokens == expect["completion_tokens"]
    if expect.get("same_text_as_generate"):
        unary = case.client().generate(prompt, **options)
        assert unary.text == "".join(d.text for d in deltas if isinstance(d, StreamDelta))
        assert unary.usage == end.usage


def run_list_models(case: Case) -> None:
    models = case.client().list_models()
    assert [m.name for m in models] == case.expect["models"]
    assert [m.name for m in models if m.default] == [case.expect["default"]]


def run_health(case: Case) -> None:
    credentials = case.credentials()
    target = case.gateway["target"]
    with (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in case["services"]:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            assert status == case.expect["status"], service


def check_error(err: StreamgateError, expect: dict[str, Any]) -> None:
    assert err.code.name == expect["code"], err
    if "reason" in expect:
        assert err.reason == expect["reason"], err
    if "field_violations" in expect:
        assert [field for field, _ in err.field_violations] == expect["field_violations"], err


def run_error(case: Case) -> None:
    client = case.client()
    with pytest.raises(StreamgateError) as caught:
        match case["call"]:
            case "list_models":
                client.list_models()
            case "generate":
                prompt, options = case.request()
                client.generate(prompt, **options)
            case "generate_stream":
                prompt, options = case.request()
                with client.generate_stream(prompt, **options) as stream:
                    list(stream)
            case other:
                pytest.fail(f"python: call {other!r} is not implemented in the Python runner")
    check_error(caught.value, case.expect)


def run_rate_limit(case: Case) -> None:
    prompt, options = case.request()
    for _ in range(case["max_calls"]):
        try:
            case.client().generate(prompt, **options)
        except StreamgateError as err:
            check_error(err, case.expect)
            bounds = case.expect["retry_delay_seconds"]
            assert err.retry_delay is not None, err
            assert bounds["above"] < err.retry_delay <= bounds["at_most"], err
            return
    pytest.fail(f"{case['max_calls']} calls passed; the last should have been refused")


def run_cancel(case: Case) -> None:
    prompt, options = case.request()
    released = None
    with case.client().generate_stream(prompt, **options) as stream:
        for event in stream:
            if isinstance(event, StreamDelta):
                assert not case.metrics_check("running")()
                released = case.metrics_check("released")
                break  # leaving the `with` block cancels the call
    assert released is not None, "the stream ended before its first Delta"
    wait_for(lambda: not released(), f"the upstream release: {released()}", SPEC["wait_seconds"])


def run_deadline(case: Case) -> None:
    prompt, options = case.request()
    released = case.metrics_check("released")
    timeout = case["deadline_ms"] / 1000
    with (
        pytest.raises(StreamgateError) as caught,
        case.client().generate_stream(prompt, timeout=timeout, **options) as stream,
    ):
        list(stream)
    check_error(caught.value, case.expect)
    wait_for(lambda: not released(), f"the upstream release: {released()}", SPEC["wait_seconds"])


@dataclass(frozen=True)
class Kind:
    run: Callable[[Case], None]
    keys: frozenset[str] = frozenset()
    expect: frozenset[str] = frozenset()


COMMON_KEYS = frozenset({"id", "kind", "gateway", "api_key", "trust", "expect"})
KINDS = {
    "stream": Kind(
        run_stream,
        frozenset({"request"}),
        frozenset({"finish_reason", "completion_tokens", "same_text_as_generate"}),
    ),
    "list_models": Kind(run_list_models, expect=frozenset({"models", "default"})),
    "health": Kind(run_health, frozenset({"services"}), frozenset({"status"})),
    "error": Kind(
        run_error, frozenset({"call", "request"}), frozenset({"code", "reason", "field_violations"})
    ),
    "rate_limit": Kind(
        run_rate_limit,
        frozenset({"request", "max_calls"}),
        frozenset({"code", "reason", "retry_delay_seconds"}),
    ),
    "cancel": Kind(run_cancel, frozenset({"request", "metrics"})),
    "deadline": Kind(
        run_deadline, frozenset({"request", "deadline_ms", "metrics"}), frozenset({"code"})
    ),
}


@pytest.mark.parametrize("spec", SPEC["cases"], ids=[c["id"] for c in SPEC["cases"]])
def test_conformance_case(
    spec: dict[str, Any], env: dict[str, Any], clients: dict[tuple[str, ...], Client]
) -> None:
    kind = KINDS.get(spec["kind"])
    if kind is None:
        pytest.fail(f"python: kind {spec['kind']!r} is not implemented in the Python runner")
    unknown = (set(spec) - COMMON_KEYS - kind.keys) | (set(spec.get("expect", {})) - kind.expect)
    if unknown:
        pytest.fail(f"python: {spec['kind']} does not implement {sorted(unknown)}")
    kind.run(Case(spec, env, clients))


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[tuple[str, ...], Client]]:
    """The clients of the run, by gateway, key and trust; closed at the end."""
    made: dict[tuple[str, ...], Client] = {}
    yield made
    for client in made.values():
        client.close()
