"""The load generator (`python -m loadtest.loadgen`) against a real gateway process in front of
the paced fake TGI, and directly against the fake: what it counts, its report, its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamgate.tenancy import hash_key
from support.fake import Fake, start_fake
from support.gateways import Gateway, engine_backend
from support.processes import ROOT, subprocess_env, wait_for

KEY = "sg-loadtest-0123456789"
TOKENS = 12

# Every call reaches the backend (nothing cacheable) and asks for TOKENS tokens.
PLAIN = f"""
description: test mix
tenants: 2
prefix_chars: 64
classes:
  - {{name: plain, prompt_chars: [16, 64], max_new_tokens: [{TOKENS}, {TOKENS}]}}
"""
ENDINGS = """
tenants: 1
prefix_chars: 0
classes:
  - {name: read, max_new_tokens: [8, 8]}
  - {name: cancel, max_new_tokens: [200, 200], cancel_after: [0.1, 0.3]}
  - {name: deadline, max_new_tokens: [200, 200], deadline: [0.1, 0.3]}
"""


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    """The fake TGI paced like a (fast) model on a shared step clock."""
    log = tmp_path_factory.mktemp("paced") / "fake.log"
    fake = start_fake(log, "--ttft", "0.02", "--token-delay", "0.005", "--lockstep")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(paced: Fake, gateways: Callable[..., Gateway]) -> Gateway:
    return gateways(
        {
            "backends": [engine_backend(paced.url, "paced")],
            "routes": [{"name": "paced", "backends": ["paced"]}],
            "auth": {"enabled": True},
            "tenants": [{"name": "load", "keys": [{"name": "k", "sha256": hash_key(KEY)}]}],
        },
        "loadgen",
    )


def loadgen(*args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {**subprocess_env(), "LOADTEST_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "loadtest.loadgen", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run(
    tmp_path: Path, mix: str, *args: str, key: str = KEY, name: str = "loadgen"
) -> tuple[int, dict[str, Any]]:
    """Write `mix`, run the generator with `args`; its exit code and JSON document."""
    (tmp_path / "mix.yaml").write_text(mix)
    where = ("--mix", str(tmp_path / "mix.yaml"), "--out", str(tmp_path), "--name", name)
    done = loadgen("run", *where, *args, key=key)
    assert (tmp_path / f"{name}.json").exists(), done.stderr
    return done.returncode, json.loads((tmp_path / f"{name}.json").read_text())


def test_a_closed_loop_counts_every_token_of_every_stream(
    tmp_path: Path, gateway: Gateway, paced: Fake
) -> None:
    before = paced.stats()["completed"]
    code, doc = run(
        tmp_path, PLAIN, "--target", gateway.address, "--concurrency", "8", "--requests", "40"
    )
    summary = doc["summary"]
    assert code == 0
    assert summary["codes"] == {"OK": 40} and summary["unexpected"] == {}
    assert summary["tokens"] == 40 * TOKENS
    assert paced.stats()["completed"] - before == 40
    assert summary["ttft"]["count"] == 40 and summary["ttft"]["p50"] >= 0.02
    assert summary["itl"]["count"] == 40 * (TOKENS - 1) - summary["merged_messages"]
    rows = doc["requests"]
    assert sorted(r["index"] for r in rows) == list(range(40))
    assert all(r["tokens"] == TOKENS and r["code"] == "OK" for r in rows)
    html = (tmp_path / "loadgen.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", html)) == 3  # no errors: no errors plot
    assert "closed loop, 8 concurrent streams" in html


def test_an_open_loop_keeps_its_schedule_and_reports_the_lag(
    tmp_path: Path, gateway: Gateway
) -> None:
    code, doc = run(
        tmp_path, PLAIN, "--target", gateway.address, "--rate", "40", "--requests", "30"
    )
    assert code == 0
    assert doc["summary"]["codes"] == {"OK": 30}
    assert doc["summary"]["generator_lag"]["count"] == 30
    assert doc["facts"]["load"] == "open loop, Poisson arrivals at 40 requests/s"


def test_cancelled_and_expired_calls_end_as_expected_and_release_their_upstream(
    tmp_path: Path, gateway: Gateway, paced: Fake
) -> None:
    code, doc = run(
        tmp_path, ENDINGS, "--target", gateway.address, "--concurrency", "12", "--requests", "36"
    )
    classes = doc["summary"]["classes"]
    assert code == 0, doc["summary"]["unexpected"]
    assert classes["read"]["codes"] == {"OK": 12}
    assert classes["cancel"]["codes"] == {"CANCELLED": 12}  # 200 tokens take over a second
    assert classes["deadline"]["codes"] == {"DEADLINE_EXCEEDED": 12}
    wait_for(
        lambda: (
            gateway.metrics().get("streamgate_upstream_streams") == 0
            and paced.stats()["active"] == 0
        ),
        "the gateway and the backend to have no stream left",
    )


def test_calls_that_fail_are_counted_by_code_and_fail_the_run(
    tmp_path: Path, gateway: Gateway
) -> None:
    code, doc = run(
        tmp_path,
        PLAIN,
        *("--target", gateway.address, "--concurrency", "2", "--requests", "6"),
        key="not-a-key",
    )
    assert code == 1
    assert doc["summary"]["unexpected"] == {"UNAUTHENTICATED": 6}
    assert "UNAUTHENTICATED" in (tmp_path / "loadgen.html").read_text()


def test_the_backend_alone_is_a_target_too(tmp_path: Path, paced: Fake) -> None:
    code, doc = run(tmp_path, PLAIN, "--tgi", paced.url, "--concurrency", "4", "--requests", "8")
    assert code == 0
    assert doc["summary"]["tokens"] == 8 * TOKENS
    assert doc["facts"]["target"] == f"TGI {paced.url}"


def test_compare_prints_two_runs_and_their_ratios(tmp_path: Path, gateway: Gateway) -> None:
    run(tmp_path, PLAIN, "--target", gateway.address, "--concurrency", "4", "--requests", "16")
    same = tmp_path / "loadgen.json"
    done = loadgen("compare", str(same), str(same))
    assert done.returncode == 0, done.stderr
    assert re.search(r"^tokens/s\s+([\d,.]+)\s+\1\s+1\.0 x\s*$", done.stdout, re.M), done.stdout
    bad = loadgen("compare", str(same), str(tmp_path / "mix.yaml"))
    assert bad.returncode == 2 and "give two JSON files written by `run`" in bad.stderr


def test_a_bad_mix_stops_the_generator_before_it_sends_anything(tmp_path: Path) -> None:
    (tmp_path / "mix.yaml").write_text("classes: [{name: a, max_new_tokens: [9, 1]}]")
    mix = str(tmp_path / "mix.yaml")
    done = loadgen("run", "--target", "127.0.0.1:1", "--concurrency", "1", "--mix", mix)
    assert done.returncode == 2
    assert "max_new_tokens: the low end 9 is above the high end 1" in done.stderr
