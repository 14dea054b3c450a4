"""Where requests go: the gateway over gRPC (`GatewayTarget`), or a TGI backend directly over
its HTTP streaming API (`TgiTarget`, the peer a gateway's added latency is measured against).

A target sends one planned request, fills its `Record` as messages arrive, cancels the call at
the planned point or lets its deadline end it, and never raises for a failed call: the
failure is the record's code.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, Self

import aiohttp
import grpc

from loadtest.loadgen.plan import Planned
from loadtest.loadgen.record import Record
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc

__all__ = ["Clock", "GatewayTarget", "Target", "TgiTarget"]

Clock = Callable[[], float]
"""Seconds since the run began."""

# Requests that are not cacheable are sampled, as a chat client's are; without a seed they are
# never cached.
TEMPERATURE, TOP_P = 0.8, 0.95


class Target(Protocol):
    """Sends planned requests (one instance per run, used from one event loop)."""

    name: str

    async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
        """Send `planned` and fill `record` until the call ends."""
        ...

    async def close(self) -> None: ...


class _Closing(ABC):
    """`async with target:` closes it at the end."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class GatewayTarget(_Closing):
    """streamgate.v1.GenerationService/GenerateStream over one grpc.aio channel."""

    def __init__(self, address: str, api_key: str | None) -> None:
        self.name = f"gateway {address}"
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = pb_grpc.GenerationServiceStub(self._channel)
        self._auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
        request = pb.GenerateStreamRequest(
            prompt=planned.prompt,
            stopping=pb.StoppingCriteria(max_new_tokens=planned.max_new_tokens),
            # Each step's tokens listed: a Delta that merged steps shows as such.
            response=pb.ResponseOptions(tokens=True),
        )
        if not planned.cacheable:
            sampling = pb.SamplingParameters(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P)
            request.sampling.CopyFrom(sampling)
        metadata = (*self._auth, ("x-user-id", planned.user))
        record.start = clock()
        call = self._stub.GenerateStream(request, metadata=metadata, timeout=planned.deadline)
        cancel = _schedule(planned.cancel_after, call.cancel)
        ended = False
        try:
            async for message in call:
                if message.HasField("delta") and message.delta.tokens:
                    record.token(clock(), len(message.delta.tokens))
                ended = message.HasField("end")
            # A stream that stops without its End is a broken answer, not a success.
            record.finish(clock(), "OK" if ended else "NO_END")
        except grpc.aio.AioRpcError as err:
            record.finish(clock(), err.code().name, err.details() or "")
        except asyncio.CancelledError:
            if not call.cancelled() or cancel is None:
                raise  # the run itself is being cancelled
            record.finish(clock(), "CANCELLED", "cancelled by the client")
        finally:
            if cancel is not None:
                cancel.cancel()

    async def close(self) -> None:
        await self._channel.close()


class TgiTarget(_Closing):
    """TGI's `POST /generate_stream` (server-sent events), on one pooled aiohttp session."""

    def __init__(self, url: str) -> None:
        self.name = f"TGI {url}"
        self._url = url.rstrip("/") + "/generate_stream"
        # Unbounded pool: like a gateway with its own connection pool, one connection a stream.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def send(self, planned: Planned, record: Record, clock: Clock) -> None:
        parameters: dict[str, object] = {"max_new_tokens": planned.max_new_tokens}
        if not planned.cacheable:
            parameters |= {"do_sample": True, "temperature": TEMPERATURE, "top_p": TOP_P}
        body: dict[str, object] = {"inputs": planned.prompt, "parameters": parameters}
        record.start = clock()
        limit = planned.deadline or planned.cancel_after
        try:
            async with asyncio.timeout(limit):
                await self._stream(body, record, clock)
        except TimeoutError:
            code = "DEADLINE_EXCEEDED" if planned.deadline else "CANCELLED"
            record.finish(clock(), code, "the client's time limit")
        except aiohttp.ClientError as err:
            record.finish(clock(), "UNAVAILABLE", str(err))

    async def _stream(self, body: dict[str, object], record: Record, clock: Clock) -> None:
        async with self._session.post(self._url, json=body) as resp:
            if resp.status != 200:
                record.finish(clock(), f"HTTP_{resp.status}", await resp.text())
                return
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    kind = str(event.get("error_type") or "error").upper()
                    record.finish(clock(), kind, str(event["error"]))
                    return
                record.token(clock(), 1)
                if event.get("generated_text") is not None:
                    record.finish(clock(), "OK")
                    return
        record.finish(clock(), "NO_END")

    async def close(self) -> None:
        await self._session.close()


def _schedule(delay: float | None, action: Callable[[], object]) -> asyncio.TimerHandle | None:
    if delay is None:
        return None
    return asyncio.get_running_loop().call_later(delay, action)
