"""The generation a call leads (stages 7-9 in order): admitted, opened upstream, relayed;
published to a flight that identical calls may join (when cacheable), stored in the cache when
it ends normally.

    async for produced in Generation(parts, call, route, prepared, choice, plan).produce():
        ...  # its Origin (while the backend prefills), then batches of backend events

If the call leaves while joiners remain and the backend is already certain, the rest is read in
the background for them (`Flights.carry_on`): whatever stage the generation was in (opening or
relaying) goes on, and what it holds (upstream slot, quota reservation, backend stream) is
released when it ends. Otherwise it is released when the call ends, however it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from streamgate.admission import AdmissionQueue
from streamgate.backends import BackendError
from streamgate.config import LimitsConfig
from streamgate.gateway.fleet.shadow import ShadowSender
from streamgate.gateway.pipeline.errors import GatewayError, Reason, from_backend_error
from streamgate.gateway.pipeline.s01_call import Call, UpstreamRecord
from streamgate.gateway.pipeline.s03_prepare import PreparedRequest
from streamgate.gateway.pipeline.s04_choose import Choice
from streamgate.gateway.pipeline.s05_cache import CachePlan, ResponseCache
from streamgate.gateway.pipeline.s06_coalesce import Flights, Origin, Produced
from streamgate.gateway.pipeline.s07_admit import Admission, admit, quota_metadata, token_budget
from streamgate.gateway.pipeline.s08_upstream import Opening, Upstream
from streamgate.gateway.pipeline.s09_relay import Relay, StreamStalled
from streamgate.routing import Replica, Route
from streamgate.telemetry.logging import get_logger
from streamgate.telemetry.metrics import GatewayMetrics
from streamgate.tgi import StreamEvent

__all__ = ["Generation", "Parts"]

log = get_logger(__name__)

# Failures that say something about the replica (not about the request, nor a full backend).
_REPLICA_FAULTS = frozenset({"unavailable", "timeout", "protocol"})


@dataclass(frozen=True)
class Parts:
    """The long-lived objects generations use (from the composition root)."""

    limits: LimitsConfig
    queue: AdmissionQueue
    cache: ResponseCache
    flights: Flights
    shadow: ShadowSender
    metrics: GatewayMetrics
    on_backend_failure: Callable[[Replica], None] | None = None
    """Told of a replica that failed a request in a way a health check should confirm."""

    def backend_failed(self, replica: Replica, err: BackendError) -> None:
        """Count a backend failure; open the replica's circuit or re-check its health when
        the failure says something about the replica."""
        self.metrics.backend_errors.labels(replica.name, err.kind).inc()
        if err.kind in _REPLICA_FAULTS and replica.circuit.record_failure():
            self.metrics.ejections.labels(replica.name).inc()
            log.warning("backend ejected: its circuit opened", backend=replica.name)
        if err.kind in ("unavailable", "timeout") and self.on_backend_failure is not None:
            self.on_backend_failure(replica)


class Generation:
    """One call's own generation (see the module doc)."""

    def __init__(
        self,
        parts: Parts,
        call: Call,
        route: Route,
        prepared: PreparedRequest,
        choice: Choice,
        plan: CachePlan,
    ) -> None:
        self._parts = parts
        self._call = call
        self._route = route
        self._prepared = prepared
        self._choice = choice
        self._plan = plan
        self._flight = parts.flights.lead(plan.key) if plan.write else None
        self._events: list[StreamEvent] = self._flight.events if self._flight else []
        self._admission: Admission | None = None
        self._opening: Opening | None = None
        self._upstream: Upstream | None = None
        self._relay: Relay | None = None
        self._origin: Origin | None = None

    async def produce(self) -> AsyncGenerator[Produced, None]:
        """Its Origin once the backend is certain, then every batch of events, for the call."""
        carried_on = False
        try:
            yield await self._start()
            relay = await self._open()
            async for batch in relay:
                self._publish(batch)
                yield batch
            self._complete()
        except (BackendError, StreamStalled, GatewayError) as err:
            error = self._fail(err)
            if error is err:
                raise
            raise error from None
        except (asyncio.CancelledError, GeneratorExit):
            carried_on = self._carry_on()
            raise
        finally:
            self._record()
            if not carried_on:
                await asyncio.shield(self._release())  # to its end, even if cancelled again
                if self._flight is not None:
                    self._parts.flights.land(self._plan.key, self._flight)
            self._call.trailing = quota_metadata(self._call.authenticated)

    async def _start(self) -> Origin:
        """Stage 7, then the start of stage 8: admitted (and a copy to the shadow pool), the
        request sent; returns the Origin once the serving backend is certain."""
        call, prepared, choice = self._call, self._prepared, self._choice
        budget = token_budget(prepared, self._route)
        self._admission = call.record.admission = await admit(
            call, budget, self._parts.queue, choice.priority
        )
        if choice.shadow is not None:
            self._parts.shadow.send(
                choice.shadow, prepared.inputs, prepared.parameters, call.request_id
            )
        self._opening = Opening(
            choice.pool, prepared, call, self._parts.limits, self._parts.backend_failed
        )
        replica, input_tokens = await self._opening.certain()
        self._origin = Origin(
            replica.model_id, replica.name, choice.pool.name, input_tokens or 0, prepared.seed
        )
        if self._flight is not None:
            self._flight.start(self._origin)
        return self._origin

    async def _open(self) -> Relay:
        """The rest of stage 8 and stage 9: the first token arrived; its stream relayed."""
        assert self._opening is not None
        upstream = self._upstream = await self._opening.opened()
        itl = self._parts.metrics.inter_token.labels(self._route.name)
        last_arrival = upstream.first_at
        call = self._call

        def arrived(at: float) -> None:
            nonlocal last_arrival
            itl.observe(at - last_arrival)
            last_arrival = at

        def stalled(err: StreamStalled) -> None:
            call.interrupt(GatewayError(Reason.CLIENT_TOO_SLOW, str(err)))

        limits = self._parts.limits
        self._relay = Relay(
            upstream.stream,
            upstream.first,
            upstream.first_at,
            capacity=limits.stream_buffer_events,
            stall_timeout=limits.stall_timeout_seconds,
            on_stall=stalled,
            on_event=arrived,
        )
        return self._relay

    def _publish(self, batch: list[StreamEvent]) -> None:
        if self._flight is not None:
            self._flight.publish(batch)
        else:
            self._events.extend(batch)

    def _complete(self) -> None:
        """The last event is in: store the answer (when the plan allows it)."""
        origin = self._origin
        assert origin is not None
        self._parts.cache.store(
            self._plan,
            self._events,
            model=origin.model,
            backend=origin.backend,
            pool=origin.pool,
            input_tokens=self._prompt_tokens() or 0,
            requested_seed=origin.seed,
        )
        if self._flight is not None:
            self._flight.finish()

    def _fail(self, err: BackendError | StreamStalled | GatewayError) -> GatewayError:
        """The generation's failure as the call's (and its joiners') error."""
        error: GatewayError
        if isinstance(err, GatewayError):
            error = err
        elif isinstance(err, StreamStalled):
            error = GatewayError(Reason.CLIENT_TOO_SLOW, str(err))
        else:
            if self._upstream is not None:
                self._parts.backend_failed(self._upstream.replica, err)
            error = from_backend_error(
                err,
                tokens_sent=self._call.tokens_sent(),
                deadline_passed=self._call.deadline_passed(),
                chat=self._prepared.chat,
            )
        if self._flight is not None:
            self._flight.fail(error)
        return error

    def _carry_on(self) -> bool:
        """Go on reading for the joiners, if any wait and the backend is certain."""
        flight = self._flight
        if flight is None or not flight.followers or flight.done or self._origin is None:
            return False

        async def read_rest() -> None:
            try:
                relay = self._relay or await self._open()
                async for batch in relay:
                    self._publish(batch)
                self._complete()
            except (BackendError, GatewayError) as err:
                self._fail(err)
            finally:
                await asyncio.shield(self._release())

        self._parts.flights.carry_on(self._plan.key, flight, read_rest)
        return True

    def _record(self) -> None:
        """What the upstream stage learned, before End is built (it reports the overhead)."""
        upstream = self._upstream
        if upstream is not None:
            last = self._relay.last_arrival if self._relay is not None else upstream.first_at
            self._call.record.upstream = UpstreamRecord(
                upstream.attempts, upstream.backend_time(last)
            )

    async def _release(self) -> None:
        """Close the backend stream, free the upstream slot and settle the quotas with the
        tokens really used (received, whether delivered or not)."""
        if self._opening is not None:
            await self._opening.cancel()
        if self._relay is not None:
            await self._relay.close()
        if self._upstream is not None:
            await self._upstream.close()
        if self._admission is not None:
            if self._relay is not None:
                received = self._relay.received
            else:
                received = int(self._upstream is not None)
            self._admission.finish(self._prompt_tokens(), received)
            tenant = self._call.authenticated.tenant
            self._parts.metrics.record_quota(tenant.name, tenant.quota.remaining())

    def _prompt_tokens(self) -> int | None:
        """The prompt's size: as the backend reported it at the end, or as known before."""
        details = self._events[-1].details if self._events else None
        if details is not None and details.input_length is not None:
            return details.input_length
        origin = self._origin
        return origin.input_tokens if origin is not None and origin.input_tokens else None
