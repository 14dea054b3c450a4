from __future__ import annotations

from loadtest.loadgen.mix import Mix, RequestClass
from loadtest.loadgen.plan import class_counts
from loadtest.loadgen.record import Record
from loadtest.loadgen.runner import RunResult
from loadtest.loadgen.stats import Summary, summarize
from loadtest.soak import Resources, checks, with_counts

MIB = 1 << 20
IDLE = {"gateway streamgate_upstream_streams": 0.0, "backend tgi_batch_current_size": 0.0}


def at_rest(rss_mib: float, fds: int, backend: int, **in_flight: float) -> Resources:
    return Resources(rss_mib * MIB, fds, backend, {**IDLE, **in_flight})


def summary(*codes: str) -> Summary:
    records = []
    for i, code in enumerate(codes):
        record = Record(i, "stream", 0.0)
        record.token(0.1, 1)
        record.finish(0.2, code)
        records.append(record)
    return summarize(RunResult(records, 1.0, [], 0.0, 0.0), {"stream": frozenset({"OK"})})


def verdict(end: Resources, *codes: str) -> dict[str, bool]:
    readings = {"after warm-up": at_rest(100, 60, 40), "after the run": end}
    return {c.name: c.passed for c in checks(summary(*(codes or ("OK",))), readings)}


def test_a_run_that_leaves_nothing_behind_passes_every_check() -> None:
    assert set(verdict(at_rest(109, 60, 44)).values()) == {True}


def test_each_leak_fails_its_own_check() -> None:
    assert verdict(at_rest(100, 60, 40), "OK", "UNKNOWN")["status codes"] is False
    left = at_rest(100, 60, 40, **{"gateway streamgate_upstream_streams": 2.0})
    assert verdict(left)["nothing in flight afterwards"] is False
    assert verdict(at_rest(111, 60, 40))["memory"] is False
    assert verdict(at_rest(100, 61, 40))["open file descriptors"] is False
    # More backend connections at rest, beyond the pool's slack: a connection not given back.
    grown = verdict(at_rest(100, 70, 50))
    assert grown["open file descriptors"] is True and grown["backend connections"] is False


def test_the_soak_mix_is_weighted_by_the_counts_asked_for() -> None:
    mix = Mix(classes=[RequestClass(name=n) for n in ("stream", "cancel", "deadline")])
    counted = with_counts(mix, {"stream": 1000, "cancel": 100, "deadline": 0})
    assert [c.name for c in counted.classes] == ["stream", "cancel"]
    assert class_counts(counted, 1100) == {"stream": 1000, "cancel": 100}
