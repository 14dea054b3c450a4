"""Flow control: a client that reads slower than the backend generates gets merged Deltas with
bounded gateway memory; one that stops reading has its backend stream cancelled after the
stall timeout and the call ends with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake, start_fake
from support.gateways import SMALL_WINDOW, Gateway, engine_backend, start_gateway
from support.processes import wait_for
from support.rpc import failure

TOKENS = 200_000  # far more than the HTTP/2 window, the gateway's buffer and TCP buffers hold
MEMORY_BOUND = 64 * 1024 * 1024  # 200k buffered events would take well over this
# The fake's own token count (max_new_tokens is bounded by its context of 2048).
FAST = f"mode:normal tokens={TOKENS}"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    # Events written in batches of 64: the backend is much faster than any client.
    fake = start_fake(tmp_path_factory.mktemp("fake") / "fake.log", "--batch", "64")
    yield fake
    fake.stop()


def flow_gateway(directory: object, fake: Fake, stall: float) -> Gateway:
    config = {
        "backends": [engine_backend(fake.url, "fake")],
        "limits": {"stream_buffer_events": 64, "stall_timeout_seconds": stall},
    }
    return start_gateway(directory, config)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def patient(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that waits a long time for slow clients."""
    gateway = flow_gateway(tmp_path_factory.mktemp("patient"), fake, stall=120.0)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def strict(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that gives up on a client after 1 s without progress."""
    gateway = flow_gateway(tmp_path_factory.mktemp("strict"), fake, stall=1.0)
    yield gateway
    gateway.stop()


def rss(gateway: Gateway) -> float:
    return gateway.metrics()["process_resident_memory_bytes"]


def received_events(gateway: Gateway) -> float:
    """Backend events the gateway has read so far, but each stream's first (the inter-token
    gaps it observed)."""
    return sum(
        value
        for name, value in gateway.metrics().items()
        if name.startswith("streamgate_inter_token_seconds_count")
    )


def test_slow_reader_gets_merged_deltas_and_memory_stays_flat(patient: Gateway, fake: Fake) -> None:
    stub = patient.stub(SMALL_WINDOW)
    stub.Generate(pb.GenerateRequest(prompt="warm up"))
    baseline = rss(patient)
    received = received_events(patient)
    request = pb.GenerateStreamRequest(prompt=FAST)
    call = stub.GenerateStream(request)
    messages = iter(call)
    assert next(messages).WhichOneof("event") == "start"
    # Stop reading for a while. The backend could send everything in well under this time; the
    # gateway must stop reading it instead of buffering it. (Whether the backend itself is
    # held back depends on the kernel's socket buffers, which may hold the whole stream.)
    peak = baseline
    deadline = time.monotonic() + 5.0  # the fake sends 200k tokens in ~2 s to a fast reader
    while time.monotonic() < deadline:
        peak = max(peak, rss(patient))
        time.sleep(0.2)
    assert received_events(patient) - received < TOKENS / 4, "the gateway read on"
    assert peak - baseline < MEMORY_BOUND
    # Read the rest: every token arrives, in fewer Deltas than tokens.
    deltas = 0
    text: list[str] = []
    end = None
    for message in messages:
        if message.WhichOneof("event") == "delta":
            deltas += 1
            text.append(message.delta.text)
        else:
            end = message.end
    assert end is not None and end.usage.completion_tokens == TOKENS
    assert "".join(text) == "".join(f"t{i} " for i in range(TOKENS))
    assert deltas < TOKENS
    assert patient.metrics()["streamgate_merged_events_total"] > 0
    assert rss(patient) - baseline < MEMORY_BOUND


def test_stalled_client_is_cut_off_and_the_backend_released(strict: Gateway, fake: Fake) -> None:
    disconnects = fake.stats()["disconnects"]
    request = pb.GenerateStreamRequest(prompt=FAST)
    call = strict.stub(SMALL_WINDOW).GenerateStream(request)
    messages = iter(call)
    assert next(messages).WhichOneof("event") == "start"
    # Read nothing more: after the stall timeout the gateway closes the backend stream.
    wait_for(lambda: fake.stats()["disconnects"] > disconnects, "the backend stream to close")
    received = 0
    with pytest.raises(grpc.RpcError) as caught:
        for message in messages:
            received += message.WhichOneof("event") == "delta"
    err = failure(caught.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "CLIENT_TOO_SLOW"
    assert 0 < int(err.metadata["tokens_sent"]) < TOKENS
    assert received > 0
    wait_for(lambda: strict.metrics()["streamgate_active_streams"] == 0, "the call to end")
