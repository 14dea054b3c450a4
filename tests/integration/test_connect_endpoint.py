"""The browser door of a real gateway process (`listen.http`), backend: the fake TGI process.

Connect (binary and JSON) and gRPC-Web over HTTP/1.1 and HTTP/2 through the Connect runtime's
own Python client; JSON lines, CORS and the origin check over plain HTTP (aiohttp). The same
pipeline as the gRPC port: messages, metadata, errors with their google.rpc details, API keys
and quotas, cancellation, deadlines, shutdown.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from connectrpc.client import ResponseMetadata
from connectrpc.compat import google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.protobuf import any_pb2
from google.rpc import status_pb2
from pyqwest import Client, HTTPTransport, HTTPVersion

from streamgate.gateway.connect.v1.admin_connect import AdminServiceClient
from streamgate.gateway.connect.v1.generation_connect import GenerationServiceClient
from streamgate.tenancy import hash_key
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc
from support.fake import Fake
from support.gateways import Gateway, engine_backend, start_gateway
from support.processes import wait_for
from support.rpc import RpcFailure, decode_status

# The TLS tests' certificate authority (tests/integration/test_gateway_tls.py).
from integration.test_gateway_tls import Authority  # isort: skip

KEY = "sg-web-0123456789"
LIMITED = "sg-web-limited-0123456789"
ADMIN = "sg-web-admin-0123456789"
ALLOWED_ORIGIN = "https://chat.example.com"
STREAM = "/streamgate.v1.GenerationService/GenerateStream"
SLOW = "mode:normal delay=0.05 tokens=400"  # 20 tokens per second, for 20 s
_PAGE = re.compile(r"chat page: (\S+)")


def tenant(name: str, key: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "keys": [{"name": "main", "sha256": hash_key(key)}], **settings}


def config(fake: Fake, **sections: Any) -> dict[str, Any]:
    """A gateway on the fake TGI with the browser door on a free port, API keys on."""
    return {
        "listen": {
            "host": "127.0.0.1",
            "port": 0,
            "http": {"enabled": True, "port": 0, "cors_origins": [ALLOWED_ORIGIN]},
        },
        "backends": [engine_backend(fake.url, "fake")],
        "auth": {"enabled": True},
        "tenants": [
            tenant("acme", KEY),
            tenant("limited", LIMITED, limits={"requests_per_minute": 1}),
            tenant("ops", ADMIN, admin=True),
        ],
        **sections,
    }


@dataclass
class Door:
    """The gateway and its browser door's URL."""

    gateway: Gateway
    url: str

    def metric(self, sample: str) -> float:
        return self.gateway.metrics().get(sample, 0.0)


def door_of(gateway: Gateway) -> Door:
    match = _PAGE.search(gateway.stdout.read_text())
    assert match, gateway.stdout.read_text()
    return Door(gateway, match.group(1).rstrip("/"))


@pytest.fixture(scope="module")
def door(fake: Fake, gateways: Callable[..., Gateway]) -> Door:
    return door_of(gateways(config(fake)))


@asynccontextmanager
async def client(
    door: Door,
    protocol: ProtocolType = ProtocolType.CONNECT,
    json_codec: bool = False,
    http2: bool = False,
) -> AsyncIterator[GenerationServiceClient]:
    """The Connect runtime's Python client on the door (HTTP/2 with prior knowledge)."""
    version = HTTPVersion.HTTP2 if http2 else HTTPVersion.HTTP1
    http = Client(HTTPTransport(http_version=version))
    codec = {"codec": google_protobuf_json_codec()} if json_codec else {}
    async with GenerationServiceClient(door.url, protocol=protocol, http_client=http, **codec) as c:
        yield c


def bearer(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def request(prompt: str = "hello", tokens: int = 5) -> pb.GenerateStreamRequest:
    return pb.GenerateStreamRequest(
        prompt=prompt, stopping=pb.StoppingCriteria(max_new_tokens=tokens)
    )


def connect_failure(err: ConnectError) -> RpcFailure:
    """A Connect error read as the gRPC door's status (support.rpc), details decoded."""
    code = grpc.StatusCode["CANCELLED" if err.code.name == "CANCELED" else err.code.name]
    status = status_pb2.Status(code=code.value[0], message=err.message)
    for detail in err.details:
        status.details.append(
            any_pb2.Any(
                type_url=f"type.googleapis.com/{detail.type_name}", value=detail.message_bytes
            )
        )
    return decode_status(
        code, err.message, [("grpc-status-details-bin", status.SerializeToString())]
    )


async def read_all(
    c: GenerationServiceClient, req: pb.GenerateStreamRequest, **options: Any
) -> tuple[list[pb.GenerateStreamResponse], RpcFailure | None]:
    """A stream's messages, and its failure if it failed."""
    messages: list[pb.GenerateStreamResponse] = []
    try:
        async for message in c.generate_stream(req, **options):
            messages.append(message)
    except ConnectError as err:
        return messages, connect_failure(err)
    return messages, None


def kinds(messages: list[pb.GenerateStreamResponse]) -> list[str]:
    return [str(m.WhichOneof("event")) for m in messages]


PROTOCOLS = [
    pytest.param(ProtocolType.CONNECT, False, False, id="connect-proto-http1"),
    pytest.param(ProtocolType.CONNECT, True, False, id="connect-json-http1"),
    pytest.param(ProtocolType.CONNECT, False, True, id="connect-proto-http2"),
    pytest.param(ProtocolType.CONNECT, True, True, id="connect-json-http2"),
    pytest.param(ProtocolType.GRPC_WEB, False, False, id="grpc-web-proto-http1"),
    pytest.param(ProtocolType.GRPC_WEB, False, True, id="grpc-web-proto-http2"),
]


@pytest.mark.parametrize(("protocol", "json_codec", "http2"), PROTOCOLS)
async def test_every_protocol_streams_one_message_per_step(
    door: Door, protocol: ProtocolType, json_codec: bool, http2: bool
) -> None:
    async with client(door, protocol, json_codec, http2) as c:
        with ResponseMetadata() as meta:
            messages, error = await read_all(c, request(tokens=5), headers=bearer())
        assert error is None
        assert kinds(messages) == ["start", "delta", "delta", "delta", "delta", "delta", "end"]
        assert "".join(m.delta.text for m in messages) == "t0 t1 t2 t3 t4 "
        start, end = messages[0].start, messages[-1].end
        assert end.finish_reason == pb.FINISH_REASON_LENGTH
        assert end.usage.completion_tokens == 5
        headers = meta.headers
        assert headers["x-request-id"] == start.request_id
        assert (headers["x-route"], headers["x-backend"]) == ("fake", "fake")
        assert headers["x-cache-status"] == "BYPASS"  # the test gateways run without a cache

        # Generate collects the same events; ListModels lists the routes.
        answer = await c.generate(
            pb.GenerateRequest(prompt="hello", stopping=pb.StoppingCriteria(max_new_tokens=3)),
            headers=bearer(),
        )
        assert answer.text == "t0 t1 t2 " and answer.end.usage.completion_tokens == 3
        models = await c.list_models(pb.ListModelsRequest(), headers=bearer())
        assert [m.name for m in models.models] == ["fake"]


async def test_quota_trailers_and_the_rate_limit(door: Door) -> None:
    async with client(door) as c:
        with ResponseMetadata() as meta:
            messages, error = await read_all(c, request(), headers=bearer(LIMITED))
        assert error is None and kinds(messages)[-1] == "end"
        assert meta.trailers["x-ratelimit-remaining-requests"] == "0"
        messages, error = await read_all(c, request(), headers=bearer(LIMITED))
    assert messages == [] and error is not None
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_delay is not None and error.retry_delay > 1
    assert error.quota and "requests" in error.quota[0][1]


@pytest.mark.parametrize("protocol", [ProtocolType.CONNECT, ProtocolType.GRPC_WEB])
async def test_errors_carry_their_google_rpc_details(door: Door, protocol: ProtocolType) -> None:
    async with client(door, protocol) as c:
        _, missing = await read_all(c, request())
        _, wrong = await read_all(c, request(), headers=bearer("sg-not-a-key"))
        unknown = request()
        unknown.model = "nope"
        _, not_found = await read_all(c, unknown, headers=bearer())
        _, invalid = await read_all(c, request(prompt=""), headers=bearer())
        messages, failed = await read_all(
            c, request("mode:error_mid_stream after=2", tokens=5), headers=bearer()
        )
    assert missing and (missing.code, missing.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_MISSING",
    )
    assert wrong and wrong.reason == "API_KEY_INVALID"
    assert not_found and (not_found.code, not_found.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ROUTE_NOT_FOUND",
    )
    assert invalid and invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.violations == [("prompt", "must not be empty")]
    # A failure after tokens were sent: the messages, then the error saying how many.
    assert kinds(messages) == ["start", "delta", "delta"]
    assert failed and failed.code == grpc.StatusCode.INTERNAL
    assert failed.reason == "BACKEND_GENERATION_FAILED"
    assert failed.metadata["tokens_sent"] == "2"
    assert failed.metadata["request_id"] == messages[0].start.request_id


async def test_admin_calls_need_an_admin_key(door: Door) -> None:
    http = Client(HTTPTransport())
    async with AdminServiceClient(door.url, http_client=http) as admin:
        stats = await admin.get_cache_stats(admin_pb.GetCacheStatsRequest(), headers=bearer(ADMIN))
        assert stats.enabled is False  # the test gateways run without the cache
        with pytest.raises(ConnectError) as refused:
            await admin.get_cache_stats(admin_pb.GetCacheStatsRequest(), headers=bearer())
    assert connect_failure(refused.value).reason == "NOT_ADMIN"


async def test_a_deadline_ends_the_call(door: Door) -> None:
    before = door.metric(
        'streamgate_requests_total{code="DEADLINE_EXCEEDED",method="GenerateStream"}'
    )
    # The deadline goes as its header only: the gateway's own timer ends the call (a client
    # timer would race it and leave, making the call CANCELLED on the gateway's clock).
    headers = {"connect-timeout-ms": "300", **bearer()}
    async with client(door) as c:
        messages, error = await read_all(
            c, request("mode:slow_first first_delay=5"), headers=headers
        )
    assert error is not None and error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(
        lambda: (
            door.metric(
                'streamgate_requests_total{code="DEADLINE_EXCEEDED",method="GenerateStream"}'
            )
            == before + 1
        ),
        "the gateway to count the call",
    )
    assert kinds(messages) in ([], ["start"])


# ---- plain HTTP: JSON lines, CORS -------------------------------------------------------------


async def post_json(
    session: aiohttp.ClientSession, door: Door, body: bytes, **headers: str
) -> aiohttp.ClientResponse:
    headers = {"content-type": "application/json", **bearer(), **headers}
    return await session.post(door.url + STREAM, data=body, headers=headers)


async def test_json_lines_for_curl(door: Door) -> None:
    body = json.dumps({"prompt": "hello", "stopping": {"maxNewTokens": 3}}).encode()
    async with aiohttp.ClientSession() as session, await post_json(session, door, body) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in resp.content]
        assert resp.headers["x-request-id"] == lines[0]["start"]["requestId"]
    assert [next(iter(line)) for line in lines] == ["start", "delta", "delta", "delta", "end"]
    assert [line["delta"]["text"] for line in lines[1:4]] == ["t0 ", "t1 ", "t2 "]
    assert lines[-1]["end"]["usage"]["completionTokens"] == 3


async def test_json_lines_errors(door: Door) -> None:
    async with aiohttp.ClientSession() as session:
        # Refused before any line: the HTTP status, and the error with readable details.
        body = json.dumps({"prompt": "hello"}).encode()
        async with await post_json(session, door, body, authorization="Bearer nope") as resp:
            assert resp.status == 401
            error = await resp.json()
        assert error["code"] == "unauthenticated"
        assert error["details"][0]["debug"]["reason"] == "API_KEY_INVALID"
        for bad in (b"{not json", b'{"prompt": "x", "tempreature": 1}'):
            async with await post_json(session, door, bad) as resp:
                assert resp.status == 400
                assert (await resp.json())["code"] == "invalid_argument"
        # A failure after the first line: the last line.
        body = json.dumps({"prompt": "mode:error_mid_stream after=1"}).encode()
        async with await post_json(session, door, body) as resp:
            assert resp.status == 200
            lines = [json.loads(line) async for line in resp.content]
    assert [next(iter(line)) for line in lines] == ["start", "delta", "error"]
    assert lines[-1]["error"]["code"] == "internal"
    info = lines[-1]["error"]["details"][0]["debug"]
    assert info["reason"] == "BACKEND_GENERATION_FAILED"
    assert info["metadata"]["tokens_sent"] == "1"


async def test_cors_allows_the_listed_origin_only(door: Door) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,connect-protocol-version",
    }
    body = json.dumps({"prompt": "hello", "stopping": {"maxNewTokens": 1}}).encode()
    async with aiohttp.ClientSession() as session:
        async with session.options(
            door.url + STREAM, headers={"origin": ALLOWED_ORIGIN, **preflight}
        ) as resp:
            assert resp.status == 204
            assert resp.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
            assert "authorization" in resp.headers["access-control-allow-headers"]
        async with await post_json(session, door, body, origin=ALLOWED_ORIGIN) as resp:
            assert resp.status == 200
            assert resp.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
            assert "x-request-id" in resp.headers["access-control-expose-headers"]
            await resp.read()
        # The page's own origin needs no CORS; any other origin is refused outright.
        async with await post_json(session, door, body, origin=door.url) as resp:
            assert resp.status == 200 and "access-control-allow-origin" not in resp.headers
            await resp.read()
        for method in (session.options, session.post):
            async with method(
                door.url + STREAM, headers={"origin": "https://evil.example", **preflight}
            ) as resp:
                assert resp.status == 403


async def test_what_the_runtime_cannot_read_is_refused(door: Door) -> None:
    generate = "/streamgate.v1.GenerationService/Generate"
    invalid = 'streamgate_requests_total{code="INVALID_ARGUMENT",method="Generate"}'
    before = door.metric(invalid)
    async with aiohttp.ClientSession() as session:
        proto = {"content-type": "application/proto", **bearer()}
        async with session.post(door.url + generate, data=b"\xff\xff", headers=proto) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == "invalid_argument"
        async with session.post(door.url + generate + "X", data=b"", headers=proto) as resp:
            assert resp.status == 404
        text = {"content-type": "text/plain", **bearer()}
        async with session.post(door.url + generate, data=b"hi", headers=text) as resp:
            assert resp.status == 415
    # A call that reached its method is counted, refused or not.
    wait_for(lambda: door.metric(invalid) == before + 1, "the refused call to be counted")


# ---- cancellation ------------------------------------------------------------------------------


def cancelled(door: Door) -> float:
    return door.metric('streamgate_requests_total{code="CANCELLED",method="GenerateStream"}')


async def test_a_client_that_leaves_ends_the_backend_stream(door: Door, fake: Fake) -> None:
    for leave in (_leave_connect, _leave_json_lines):
        calls, left = cancelled(door), fake.stats()["disconnects"]
        await leave(door)
        # The gateway closed the backend's response: the fake saw its client leave.
        wait_for(lambda: fake.stats()["disconnects"] == left + 1, "the backend stream to close")  # noqa: B023
        wait_for(lambda: cancelled(door) == calls + 1, "the gateway to count the call")  # noqa: B023
        assert door.metric("streamgate_active_streams") == 0


async def _leave_connect(door: Door) -> None:
    async with client(door) as c:
        stream = c.generate_stream(request(SLOW, tokens=400), headers=bearer())
        seen = [await anext(stream) for _ in range(3)]
        assert kinds(seen) == ["start", "delta", "delta"]
        await stream.aclose()  # type: ignore[attr-defined]


async def _leave_json_lines(door: Door) -> None:
    body = json.dumps({"prompt": SLOW, "stopping": {"maxNewTokens": 400}}).encode()
    async with aiohttp.ClientSession() as session:
        resp = await post_json(session, door, body)
        for _ in range(3):
            await resp.content.readline()
        resp.close()


# ---- the door's life with the gateway's --------------------------------------------------------


@pytest.fixture
def own_gateway(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Gateway]]:
    started: list[Gateway] = []

    def start(cfg: dict[str, Any]) -> Gateway:
        started.append(start_gateway(tmp_path, cfg))
        return started[-1]

    yield start
    for gateway in started:
        gateway.stop()


async def test_shutdown_interrupts_a_stream_with_unavailable(
    fake: Fake, own_gateway: Callable[[dict[str, Any]], Gateway]
) -> None:
    door = door_of(own_gateway(config(fake, limits={"shutdown_grace_seconds": 0.3})))
    async with client(door) as c:
        stream = c.generate_stream(request(SLOW, tokens=400), headers=bearer())
        assert kinds([await anext(stream), await anext(stream)]) == ["start", "delta"]
        door.gateway.signal(signal.SIGTERM)
        with pytest.raises(ConnectError) as interrupted:
            async for _ in stream:
                pass
    failure = connect_failure(interrupted.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
    assert failure.retry_delay is not None
    assert door.gateway.wait_exit() == 0


def test_a_busy_port_stops_the_start(fake: Fake, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(fake)
        cfg["listen"]["http"]["port"] = port
        with pytest.raises(pytest.fail.Exception):
            start_gateway(tmp_path, cfg)
    log = (tmp_path / "gateway.err").read_text()
    assert f"cannot listen on 127.0.0.1:{port} (listen.http)" in log


async def test_https_speaks_http2_to_browsers(
    fake: Fake, own_gateway: Callable[[dict[str, Any]], Gateway], tmp_path: Path
) -> None:
    """Browsers speak HTTP/2 only over TLS: ALPN offers it, and the door serves over it."""
    ca = Authority(tmp_path, "web")
    server = ca.issue("gateway", server=True)
    cfg = config(fake)
    cfg["listen"]["http"]["tls"] = {"cert_file": str(server.cert), "key_file": str(server.key)}
    door = door_of(own_gateway(cfg))
    assert door.url.startswith("https://127.0.0.1:")
    http = Client(HTTPTransport(tls_ca_cert=ca.cert.read_bytes()))
    async with http.stream(
        "POST",
        door.url + "/streamgate.v1.GenerationService/ListModels",
        {"content-type": "application/json", **bearer()},
        b"{}",
    ) as response:
        assert response.status == 200
        assert response.http_version == HTTPVersion.HTTP2
    async with GenerationServiceClient(door.url, http_client=http) as c:
        messages, error = await read_all(c, request(tokens=2), headers=bearer())
    assert error is None and kinds(messages) == ["start", "delta", "delta", "end"]


async def test_calls_on_both_doors_share_the_gateway(door: Door) -> None:
    """One pipeline: a stream on each door at once, both counted by the same metrics."""
    before = door.metric('streamgate_requests_total{code="OK",method="GenerateStream"}')
    channel = grpc.aio.insecure_channel(door.gateway.address)
    grpc_stub = pb_grpc.GenerationServiceStub(channel)
    async with client(door) as c:
        grpc_call = grpc_stub.GenerateStream(request(), metadata=tuple(bearer().items()))
        (browser, error), grpc_messages = await asyncio.gather(
            read_all(c, request(), headers=bearer()), _collect(grpc_call)
        )
    await channel.close()
    assert error is None and kinds(browser) == kinds(grpc_messages)
    wait_for(
        lambda: (
            door.metric('streamgate_requests_total{code="OK",method="GenerateStream"}')
            == before + 2
        ),
        "both calls to be counted",
    )


async def _collect(call: Any) -> list[pb.GenerateStreamResponse]:
    return [message async for message in call]
