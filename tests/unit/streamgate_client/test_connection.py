"""streamgate_client.connection: what both clients send on every call, and TLS credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamgate_client import DEFAULT_TARGET, AsyncClient, Client, tls_credentials
from support.stub_generation import Stub, run_sync


async def test_request_fields_and_metadata_arrive_as_given(stub: Stub) -> None:
    def work(client: Client) -> object:
        list(client.generate_stream("hi", temperature=0.0, seed=0, do_sample=False))
        list(client.generate_stream("hi", request_id="mine", metadata={"X-User-Id": "u1"}))
        return None

    await run_sync(stub, work, api_key="sk-test", metadata=[("x-priority", "high")])
    explicit, bare = stub.servicer.requests
    assert explicit.sampling.HasField("temperature")
    assert explicit.sampling.HasField("seed")
    assert explicit.sampling.HasField("do_sample")
    assert not explicit.sampling.HasField("top_k")
    assert not explicit.HasField("stopping")
    assert not bare.HasField("sampling")
    first, second = stub.servicer.metadata
    assert first["authorization"] == "Bearer sk-test"
    assert first["x-priority"] == "high"
    assert "x-request-id" not in first
    assert second["x-request-id"] == "mine"
    assert second["x-user-id"] == "u1"  # keys are lower-cased
    assert second["authorization"] == "Bearer sk-test"


async def test_async_client_sends_the_same_metadata(stub: Stub) -> None:
    async with AsyncClient(stub.target, api_key="sk-test", metadata={"X-Priority": "high"}) as c:
        await c.generate("hi", request_id="mine", metadata=[("x-user-id", "u1")])
        await c.list_models(metadata={"x-user-id": "u2"})
    generate, models = stub.servicer.metadata
    assert (generate["authorization"], generate["x-priority"]) == ("Bearer sk-test", "high")
    assert (generate["x-request-id"], generate["x-user-id"]) == ("mine", "u1")
    assert (models["authorization"], models["x-user-id"]) == ("Bearer sk-test", "u2")
    assert "x-request-id" not in models


def test_the_default_target_is_where_serve_listens() -> None:
    with Client() as client:
        assert client.target == DEFAULT_TARGET == "127.0.0.1:50051"


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        tls_credentials(cert_file=str(tmp_path / "client.pem"))
    with pytest.raises(FileNotFoundError):
        tls_credentials(ca_file=str(tmp_path / "missing.pem"))
