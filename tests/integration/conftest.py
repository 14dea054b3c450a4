"""Fixtures every integration test module shares: engines, the fake TGI, Redis, gateways.

The helpers behind them live in tests/support (processes, engines, the fake TGI, Redis,
gateways, reading gRPC answers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.engines import Engine, start_engine_process, stop_engine_process
from support.fake import Fake, start_fake
from support.gateways import Gateway, gateway_pool
from support.processes import free_port, wait_for
from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The shared engine: tiny model, max_input_tokens 256, max_total_tokens 512."""
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    eng = start_engine_process(log, ("--max-input-tokens", "256", "--max-total-tokens", "512"))
    yield eng
    stop_engine_process(eng)


@pytest.fixture(scope="session")
def url(engine: Engine) -> str:
    """Base URL of the shared engine."""
    return engine.url


@pytest.fixture(scope="session")
def limited_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine that is easy to fill: two request slots, one sequence per step, best_of <= 2,
    keep-alive comments after 10 ms without an event."""
    log = tmp_path_factory.mktemp("limited") / "engine.log"
    eng = start_engine_process(
        log,
        (
            "--max-concurrent-requests",
            "2",
            "--max-batch-size",
            "1",
            "--max-best-of",
            "2",
            "--keep-alive-seconds",
            "0.01",
            "--max-total-tokens",
            "1024",
        ),
    )
    yield eng
    stop_engine_process(eng)


def _engines(directory: Path) -> Iterator[Callable[..., Engine]]:
    started: list[Engine] = []

    def start(*args: str) -> Engine:
        eng = start_engine_process(directory / f"engine-{len(started)}.log", args)
        started.append(eng)
        return eng

    yield start
    for eng in started:
        stop_engine_process(eng)


@pytest.fixture
def start_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start extra engines (`start_engine("--model", dir)`); each is stopped after the test."""
    yield from _engines(tmp_path)


@pytest.fixture(scope="module")
def module_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Engine]]:
    """Like `start_engine`, but the engines live until the end of the module."""
    yield from _engines(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def wait() -> Callable[..., None]:
    """`wait(predicate, what, timeout=60)`: poll until true, fail after the timeout."""
    return wait_for


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    """The fault-injecting fake TGI (support/fake_tgi.py), one process per test module."""
    fake = start_fake(tmp_path_factory.mktemp("fake") / "fake.log")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, one per test module."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """`gateways(config, name)` starts a gateway process; all stop at the end of the module
    (modules that need a fresh gateway per test override this with a function-scoped one)."""
    with gateway_pool(tmp_path_factory.mktemp("gateways")) as start:
        yield start
