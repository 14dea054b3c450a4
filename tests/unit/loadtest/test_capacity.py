from __future__ import annotations

import dataclasses

import pytest
from loadtest.capacity import Level

BASE = Level(
    streams=32,
    direct_ttft_p50=0.10,
    direct_ttft_p99=0.12,
    gateway_ttft_p50=0.10,
    gateway_ttft_p99=0.129,
    direct_itl_p99=0.021,
    gateway_itl_p99=0.022,
    merged_messages=0,
    merged_events=0.0,
    errors=0,
    tokens=8000,
    gateway_cpu_seconds=2.0,
    gateway_tokens_per_s=1600.0,
    client_cpu=0.2,
)


def test_a_level_passes_within_10_ms_of_added_ttft_without_merges_or_errors() -> None:
    assert BASE.added_ttft_p99 == pytest.approx(0.009)
    assert BASE.passed
    assert BASE.cpu_per_1k_tokens == pytest.approx(0.25)


@pytest.mark.parametrize(
    "change", [{"gateway_ttft_p99": 0.131}, {"merged_messages": 1}, {"errors": 1}]
)
def test_a_level_fails_on_added_ttft_a_merged_message_or_an_error(change: dict[str, float]) -> None:
    assert not dataclasses.replace(BASE, **change).passed  # type: ignore[arg-type]
