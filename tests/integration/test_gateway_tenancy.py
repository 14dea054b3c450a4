"""Tenancy and admission through a real gateway process: API keys, route access, quotas, the
admission queue (backend: the fake TGI, also a process)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from streamgate.tenancy import hash_key
from streamgate_client.v1 import generation_pb2 as pb
from support.fake import Fake
from support.gateways import Gateway, engine_backend
from support.processes import wait_for
from support.rpc import expect_failure, failure, read_stream

ACME = "sg-acme-ci-0123456789"
ACME_ENV = "sg-acme-env-0123456789"
RPM = "sg-rpm-0123456789"
TPM = "sg-tpm-0123456789"
STREAMS = "sg-streams-0123456789"
ENV_VAR = "STREAMGATE_TEST_TENANCY_KEY_UNUSED"  # STREAMGATE_* is not passed to the gateway
KEY_VAR = "TEST_TENANCY_ACME_KEY"
TPM_LIMIT = 1000
SLOW = "mode:normal delay=0.05"  # 20 tokens per second


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def tenant(name: str, key: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "keys": [{"name": "main", "sha256": hash_key(key)}], **settings}


@pytest.fixture(scope="module")
def gateway(fake: Fake, gateways: Callable[..., Gateway]) -> Gateway:
    os.environ[KEY_VAR] = ACME_ENV
    try:
        return gateways(
            {
                "backends": [engine_backend(fake.url, "b1"), engine_backend(fake.url, "b2")],
                "routes": [
                    {"name": "fake", "backends": ["b1"]},
                    {"name": "other", "backends": ["b2"]},
                ],
                "auth": {"enabled": True},
                "tenants": [
                    {
                        "name": "acme",
                        "keys": [
                            {"name": "ci", "sha256": hash_key(ACME)},
                            {"name": "env", "key_env": KEY_VAR},
                        ],
                        "routes": ["fake"],
                    },
                    tenant("rpm", RPM, limits={"requests_per_minute": 3}),
                    tenant("tpm", TPM, limits={"tokens_per_minute": TPM_LIMIT}),
                    tenant("streams", STREAMS, limits={"max_concurrent_streams": 2}),
                ],
            },
            name="tenancy",
        )
    finally:
        del os.environ[KEY_VAR]


def generate(gateway: Gateway, key: str | None, **fields: Any) -> pb.GenerateResponse:
    request = pb.GenerateRequest(**{"prompt": "hello", **fields})
    metadata = bearer(key) if key else ()
    response: pb.GenerateResponse = gateway.stub().Generate(request, metadata=metadata, timeout=30)
    return response


# ---- authentication and access ------------------------------------------------------------------


def test_keys_map_to_their_tenant_and_keys_never_reach_the_logs(gateway: Gateway) -> None:
    for key, name in ((ACME, "acme/ci"), (ACME_ENV, "acme/env")):
        call = gateway.stub().GenerateStream(
            pb.GenerateStreamRequest(prompt="hi", model="fake"), metadata=bearer(key)
        )
        result = read_stream(call)
        assert result.error is None and result.end is not None
        lines = [
            line
            for line in gateway.log_lines()
            if line.get("request_id") == (result.start.request_id if result.start else "")
        ]
        assert lines and lines[-1]["tenant"] == "acme" and lines[-1]["key"] == name
    logs = gateway.logs()
    assert ACME not in logs and ACME_ENV not in logs and hash_key(ACME) not in logs


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "API_KEY_MISSING"),
        (bearer("sg-not-a-key"), "API_KEY_INVALID"),
        ((("authorization", ACME),), "API_KEY_INVALID"),  # no "Bearer"
    ],
)
def test_missing_or_unknown_keys_are_unauthenticated(
    gateway: Gateway, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    for call in (
        lambda: gateway.stub().Generate(pb.GenerateRequest(prompt="x"), metadata=metadata),
        lambda: gateway.stub().ListModels(pb.ListModelsRequest(), metadata=metadata),
    ):
        err = expect_failure(call)
        assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert gateway.metrics()[f'streamgate_rejections_total{{reason="{reason}",tenant=""}}'] >= 2


def test_a_tenant_cannot_tell_unknown_routes_from_forbidden_ones(gateway: Gateway) -> None:
    errors = [
        expect_failure(lambda m=model: generate(gateway, ACME, model=m))
        for model in ("other", "no-such-route")
    ]
    for err in errors:
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROUTE_NOT_ALLOWED")
    assert errors[0].message.replace("other", "X") == errors[1].message.replace(
        "no-such-route", "X"
    )
    # Without route limits the same unknown name is NOT_FOUND.
    err = expect_failure(lambda: generate(gateway, RPM, model="no-such-route"))
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_list_models_shows_only_the_tenants_routes(gateway: Gateway) -> None:
    listed = gateway.stub().ListModels(pb.ListModelsRequest(), metadata=bearer(ACME))
    assert [m.name for m in listed.models] == ["fake"]
    listed = gateway.stub().ListModels(pb.ListModelsRequest(), metadata=bearer(TPM))
    assert [m.name for m in listed.models] == ["fake", "other"]


# ---- quotas -------------------------------------------------------------------------------------


def test_requests_per_minute(gateway: Gateway) -> None:
    remaining = []
    for _ in range(3):
        call = gateway.stub().Generate.with_call(
            pb.GenerateRequest(prompt="x"), metadata=bearer(RPM), timeout=30
        )
        trailing = dict(call[1].trailing_metadata())
        remaining.append(int(trailing["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    err = expect_failure(lambda: generate(gateway, RPM))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert err.quota and err.quota[0][0] == "tenant rpm"
    # The bucket refills at 3 a minute: the next request fits in about 20 s.
    assert err.retry_delay is not None and 0 < err.retry_delay <= 20.5
    assert err.trailing["x-ratelimit-remaining-requests"] == "0"


def test_a_request_larger_than_the_token_limit_can_never_pass(gateway: Gateway) -> None:
    err = expect_failure(
        lambda: generate(gateway, TPM, stopping=pb.StoppingCriteria(max_new_tokens=TPM_LIMIT + 1))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_OVER_QUOTA")
    assert err.retry_delay is None  # waiting cannot help
    assert err.quota and "1000" in err.quota[0][1]


def test_tokens_per_minute_are_never_exceeded_by_racing_requests(gateway: Gateway) -> None:
    """50 concurrent calls, each reserving prompt + 50 new tokens, against 1,000 tokens a minute.

    Exact bound: from an idle bucket (no earlier reservation of this tenant is outstanding), the
    usage settled by calls admitted within t seconds is at most the bucket's capacity plus its
    refill, TPM_LIMIT * (1 + t / 60); a call is admitted only when its whole reservation (an
    upper bound of its usage) is in the bucket.
    """
    request = pb.GenerateRequest(prompt="hi", stopping=pb.StoppingCriteria(max_new_tokens=50))
    stub = gateway.stub()
    barrier = threading.Barrier(50)
    outcomes: list[Any] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            response = stub.Generate(request, metadata=bearer(TPM), timeout=30)
            outcome: Any = response
        except grpc.RpcError as err:
            outcome = failure(err)
        with lock:
            outcomes.append(outcome)

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ok = [o for o in outcomes if isinstance(o, pb.GenerateResponse)]
    refused = [o for o in outcomes if not isinstance(o, pb.GenerateResponse)]
    used = sum(r.end.usage.prompt_tokens + r.end.usage.completion_tokens for r in ok)
    assert ok and refused
    assert {(e.code, e.reason) for e in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    }
    assert used <= TPM_LIMIT * (1 + elapsed / 60)
    # Each call reserves len("hi") + 2 + 50 = 54 tokens: a full bucket admits 18 at once.
    assert len(ok) <= TPM_LIMIT // 54 + int(TPM_LIMIT * elapsed / 60 / 54) + 1


def test_concurrent_streams_per_tenant(gateway: Gateway) -> None:
    stub = gateway.stub()
    request = pb.GenerateStreamRequest(
        prompt=SLOW, stopping=pb.StoppingCriteria(max_new_tokens=2000)
    )
    running = [stub.GenerateStream(request, metadata=bearer(STREAMS)) for _ in range(2)]
    for call in running:
        assert next(iter(call)).WhichOneof("event") == "start"
    err = expect_failure(lambda: generate(gateway, STREAMS))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    assert err.retry_delay is not None
    for call in running:
        call.cancel()
    wait_for(
        lambda: (
            gateway.metrics().get('streamgate_quota_remaining{kind="streams",tenant="streams"}')
            == 2
        ),
        "the stream slots to be released",
    )
    assert generate(gateway, STREAMS).end.finish_reason


# ---- the admission queue ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def queued(fake: Fake, gateways: Callable[..., Gateway]) -> Gateway:
    """One upstream slot, a queue of 3 that waits at most 2 s; no auth, tenants by priority."""
    return gateways(
        {
            "backends": [engine_backend(fake.url, "fake")],
            "admission": {
                "max_active_streams": 1,
                "max_queued": 3,
                "max_queue_wait_seconds": 2.0,
            },
            "tenants": [
                {
                    "name": "default",
                    "allow_priority_header": True,
                    "priority": 9,
                    "limits": {"max_concurrent_streams": 50},
                }
            ],
        },
        name="queued",
    )


def hold_the_slot(gateway: Gateway) -> Any:
    """A stream that keeps the only upstream slot until cancelled."""
    request = pb.GenerateStreamRequest(
        prompt=SLOW, stopping=pb.StoppingCriteria(max_new_tokens=2000)
    )
    call = gateway.stub().GenerateStream(request)
    assert next(iter(call)).WhichOneof("event") == "start"
    return call


def queue_length(gateway: Gateway) -> float:
    return gateway.metrics()["streamgate_queue_length"]


def test_queued_calls_run_by_priority_then_arrival(queued: Gateway) -> None:
    holder = hold_the_slot(queued)
    order: list[str] = []
    lock = threading.Lock()
    stub = queued.stub()

    def call(name: str, priority: int) -> None:
        response = stub.Generate(
            pb.GenerateRequest(prompt="x", stopping=pb.StoppingCriteria(max_new_tokens=2)),
            metadata=(("x-priority", str(priority)),),
            timeout=30,
        )
        with lock:
            order.append(name)
        assert response.end.timings.queue_seconds > 0

    threads = []
    for name, priority in (("low-1", 1), ("low-2", 1), ("high", 8)):
        thread = threading.Thread(target=call, args=(name, priority))
        thread.start()
        threads.append(thread)
        expected = len(threads)
        wait_for(lambda n=expected: queue_length(queued) == n, f"{expected} calls queued")
    holder.cancel()
    for thread in threads:
        thread.join()
    assert order == ["high", "low-1", "low-2"]
    wait_for(lambda: queued.metrics()["streamgate_upstream_streams"] == 0, "the slot freed")


def test_a_full_queue_and_a_long_wait_are_refused(queued: Gateway) -> None:
    holder = hold_the_slot(queued)
    try:
        stub = queued.stub()
        waiting = [
            stub.Generate.future(pb.GenerateRequest(prompt="x"), timeout=30) for _ in range(3)
        ]
        wait_for(lambda: queue_length(queued) == 3, "the queue to fill")
        err = expect_failure(lambda: stub.Generate(pb.GenerateRequest(prompt="x"), timeout=30))
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL")
        assert err.retry_delay is not None
        for future in waiting:  # the slot stays taken: each waits its 2 s, then gives up
            with pytest.raises(grpc.RpcError) as caught:
                future.result()
            timed_out = failure(caught.value)
            assert (timed_out.code, timed_out.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "QUEUE_TIMEOUT",
            )
    finally:
        holder.cancel()
    wait_for(lambda: queue_length(queued) == 0, "the queue to empty")


def test_a_bad_priority_is_invalid(queued: Gateway) -> None:
    err = expect_failure(
        lambda: queued.stub().Generate(
            pb.GenerateRequest(prompt="x"), metadata=(("x-priority", "high"),)
        )
    )
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert err.violations[0][0] == "x-priority"


def test_nothing_leaks_after_a_thousand_cancelled_calls(queued: Gateway) -> None:
    """Cancelled while queued, while waiting for the first token, and mid-stream; failed."""
    stub = queued.stub()
    holder = hold_the_slot(queued)
    request = pb.GenerateStreamRequest(prompt="x", stopping=pb.StoppingCriteria(max_new_tokens=5))
    for i in range(900):  # queued behind the holder, then cancelled (or cut by the deadline)
        call = stub.GenerateStream(request, timeout=0.02 if i % 2 else None)
        if i % 2 == 0:
            call.cancel()
        read_stream(call)
    holder.cancel()
    slow = pb.GenerateStreamRequest(prompt=SLOW, stopping=pb.StoppingCriteria(max_new_tokens=50))
    for _ in range(100):  # cancelled after the first Delta
        call = stub.GenerateStream(slow)
        messages = iter(call)
        next(messages)
        call.cancel()
    for mode in ("mode:error_mid_stream after=2", "mode:overloaded", "mode:drop after=1"):
        for _ in range(10):  # failed calls
            assert read_stream(stub.GenerateStream(pb.GenerateStreamRequest(prompt=mode))).error
    wait_for(
        lambda: queued.metrics()["streamgate_upstream_streams"] == 0 and queue_length(queued) == 0,
        "every slot and queue place to be released",
    )
    # Every reservation was settled: all 50 of the tenant's streams are free again.
    assert queued.metrics()['streamgate_quota_remaining{kind="streams",tenant="default"}'] == 50
    assert (
        queued.metrics()['streamgate_tenant_requests_total{code="CANCELLED",tenant="default"}'] > 0
    )
    response = stub.Generate(pb.GenerateRequest(prompt="x"), timeout=30)
    assert response.end.timings.queue_seconds == 0
