"""Tenants and keys from the configuration: the default tenant, keys from the config, the
environment and a keys file, and every configuration error named by its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamgate.config import ConfigError, GatewayConfig
from streamgate.tenancy import Caller, Tenancy, hash_key

KEY = "sg-unit-test-key"


def config(**sections: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(sections)


def acme(**settings: Any) -> dict[str, Any]:
    return {"name": "acme", "keys": [{"name": "ci", "sha256": hash_key(KEY)}], **settings}


def test_without_tenants_every_call_is_the_default_tenant_with_every_route() -> None:
    tenancy = Tenancy.from_config(config())
    assert not tenancy.auth_enabled
    caller = tenancy.anonymous
    assert caller.tenant.name == "default" and caller.key is None
    assert caller.tenant.may_use("anything")


def test_a_configured_default_tenant_applies_without_auth() -> None:
    cfg = config(tenants=[{"name": "default", "limits": {"requests_per_minute": 5}}])
    caller = Tenancy.from_config(cfg).anonymous
    assert caller.tenant.quota.limits.requests_per_minute == 5


def test_keys_from_the_config_and_from_the_environment() -> None:
    cfg = config(
        auth={"enabled": True},
        tenants=[
            acme(),
            {"name": "beta", "keys": [{"name": "env", "key_env": "BETA_KEY"}], "priority": 2},
        ],
    )
    tenancy = Tenancy.from_config(cfg, env={"BETA_KEY": "sg-beta"})
    acme_key = tenancy.keys.lookup(KEY)
    assert acme_key is not None and acme_key.tenant.name == "acme"
    beta = tenancy.keys.lookup("sg-beta")
    assert beta is not None and (beta.tenant.name, beta.label) == ("beta", "beta/env")
    assert beta.tenant.priority == 2


def test_a_tenant_limited_to_some_routes_may_use_only_those() -> None:
    tenancy = Tenancy.from_config(
        config(
            backends=[{"name": "b", "url": "http://127.0.0.1:1"}],
            routes=[{"name": "r1", "backends": ["b"]}, {"name": "r2", "backends": ["b"]}],
            tenants=[acme(routes=["r1"])],
        )
    )
    tenant = tenancy.tenants["acme"]
    assert tenant.may_use("r1")
    assert not tenant.may_use("r2") and not tenant.may_use("ghost")


def test_a_missing_key_variable_is_a_config_error() -> None:
    cfg = config(tenants=[{"name": "beta", "keys": [{"name": "env", "key_env": "NOPE"}]}])
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.keys\[0\]\.key_env: .*NOPE"):
        Tenancy.from_config(cfg, env={})


def test_the_same_key_twice_is_a_config_error() -> None:
    cfg = config(tenants=[acme(), {"name": "b", "keys": [{"name": "x", "sha256": hash_key(KEY)}]}])
    with pytest.raises(ConfigError, match="acme/ci and b/x are the same key"):
        Tenancy.from_config(cfg)


def test_auth_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API keys"):
        Tenancy.from_config(config(auth={"enabled": True}))


def test_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"- {{tenant: acme, name: file, sha256: {hash_key('sg-file')}, "
        "limits: {requests_per_minute: 7}}\n"
    )
    cfg = config(auth={"enabled": True, "keys_file": str(keys)}, tenants=[{"name": "acme"}])
    key = Tenancy.from_config(cfg).keys.lookup("sg-file")
    assert key is not None and key.label == "acme/file"
    assert key.quota is not None and key.quota.limits.requests_per_minute == 7
    caller = Caller(key.tenant, key)
    assert caller.quotas == (key.tenant.quota, key.quota)  # the tenant's, then the key's own


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- {tenant: nobody, name: k, sha256: " + "a" * 64 + "}\n", "unknown tenant 'nobody'"),
        ("- {tenant: acme, name: k, sha256: xyz}\n", r"keys_file\[0\]\.sha256: must be 64 hex"),
        ("{not: a list}\n", "keys_file"),
    ],
)
def test_bad_keys_files(tmp_path: Path, text: str, problem: str) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(text)
    cfg = config(auth={"keys_file": str(keys)}, tenants=[{"name": "acme"}])
    with pytest.raises(ConfigError, match=problem):
        Tenancy.from_config(cfg)
