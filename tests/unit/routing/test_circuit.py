"""The circuit breaker: opens after consecutive failures, probes once, backs off, closes."""

from __future__ import annotations

from streamgate.routing import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    circuit = CircuitBreaker(failures_to_open=3, open_seconds=5, max_open_seconds=12, clock=clock)
    assert not circuit.record_failure() and not circuit.record_failure()
    circuit.record_success()  # a success in between: the count starts again
    assert not circuit.record_failure() and not circuit.record_failure()
    assert circuit.record_failure() and circuit.state is CircuitState.OPEN
    assert not circuit.available()
    clock.now = 5.0
    assert circuit.state is CircuitState.HALF_OPEN and circuit.available()
    circuit.on_send()  # the probe
    assert not circuit.available()  # one probe at a time
    assert circuit.record_failure()  # failed probe: open for twice as long
    clock.now = 14.9
    assert not circuit.available()
    clock.now = 15.0
    circuit.on_send()
    assert circuit.record_failure()  # 20 s, capped at 12
    clock.now = 27.0
    circuit.on_send()
    circuit.record_success()
    assert circuit.state is CircuitState.CLOSED and circuit.available()
