"""The checks that span sections: pools and routes, tenants' routes."""

from __future__ import annotations

from typing import Any

import pytest

from streamgate.config import GatewayConfig

BACKENDS: list[dict[str, Any]] = [{"name": n, "url": f"http://{n}:80"} for n in ("a", "b")]


def test_pools_in_the_config() -> None:
    config = GatewayConfig.model_validate(
        {
            "backends": BACKENDS,
            "pools": [{"name": "main", "backends": ["a", "b"], "picker": "least_load"}],
            "routes": [{"name": "llama", "pool": "main"}, {"name": "solo", "backends": ["a"]}],
        }
    )
    assert [p.name for p in config.effective_pools()] == ["main", "solo"]
    with pytest.raises(ValueError, match="unknown pool 'nope'"):
        GatewayConfig.model_validate(
            {"backends": BACKENDS, "routes": [{"name": "r", "pool": "nope"}]}
        )
    with pytest.raises(ValueError, match="set one of backends, pool and split"):
        GatewayConfig.model_validate(
            {"backends": BACKENDS, "routes": [{"name": "r", "backends": ["a"], "pool": "x"}]}
        )


def test_tenant_routes_must_exist_in_the_config() -> None:
    with pytest.raises(ValueError, match=r"tenants\[0\]\.routes: unknown route 'nope'"):
        GatewayConfig.model_validate({"tenants": [{"name": "acme", "routes": ["nope"]}]})
