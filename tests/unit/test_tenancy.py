"""Tenants and keys from the configuration; authentication, authorization, priority and the
token budget of the admission stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from streamgate.backends import TGIParameters
from streamgate.config import ConfigError, GatewayConfig
from streamgate.gateway.admit import UNBOUNDED_NEW_TOKENS, token_budget
from streamgate.gateway.auth import authenticate, authorize, priority
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError
from streamgate.gateway.prepare import PreparedRequest
from streamgate.routing import LeastLoad, Pool, Route, Target
from streamgate.tenancy import Tenancy, hash_key, new_key

KEY = "sg-unit-test-key"


def config(**sections: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(sections)


def ctx(authorization: str = "", priority_hint: str = "") -> RequestContext:
    return RequestContext(
        request_id="r",
        method="Generate",
        peer="",
        started=0.0,
        deadline=None,
        authorization=authorization,
        priority_hint=priority_hint,
    )


def acme(**settings: Any) -> dict[str, Any]:
    return {"name": "acme", "keys": [{"name": "ci", "sha256": hash_key(KEY)}], **settings}


def test_new_keys_are_random_and_hash_to_hex() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sg-") and len(a) > 30
    assert len(hash_key(a)) == 64 and hash_key(a) == hash_key(a)


def test_auth_off_makes_every_call_the_default_tenant() -> None:
    tenancy = Tenancy.from_config(config())
    caller = authenticate(ctx(), tenancy)
    assert caller.tenant.name == "default" and caller.key is None
    assert caller.tenant.may_use("anything")


def test_a_configured_default_tenant_applies_without_auth() -> None:
    cfg = config(tenants=[{"name": "default", "limits": {"requests_per_minute": 5}}])
    caller = authenticate(ctx(), Tenancy.from_config(cfg))
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
    assert authenticate(ctx(f"Bearer {KEY}"), tenancy).tenant.name == "acme"
    beta = authenticate(ctx("bearer sg-beta"), tenancy)
    assert (beta.tenant.name, beta.key.label if beta.key else "") == ("beta", "beta/env")


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
    cfg = GatewayConfig.model_validate(
        {"auth": {"enabled": True, "keys_file": str(keys)}, "tenants": [{"name": "acme"}]}
    )
    caller = authenticate(ctx("Bearer sg-file"), Tenancy.from_config(cfg))
    assert caller.key is not None and caller.key.label == "acme/file"
    assert len(caller.quotas) == 2  # the tenant's, then the key's own


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
    cfg = GatewayConfig.model_validate(
        {"auth": {"keys_file": str(keys)}, "tenants": [{"name": "acme"}]}
    )
    with pytest.raises(ConfigError, match=problem):
        Tenancy.from_config(cfg)


@pytest.mark.parametrize(
    ("header", "reason"),
    [("", "API_KEY_MISSING"), ("Bearer ", "API_KEY_INVALID"), (KEY, "API_KEY_INVALID"),
     ("Bearer sg-wrong", "API_KEY_INVALID"), ("Basic abc", "API_KEY_INVALID")],
)  # fmt: skip
def test_authentication_errors(header: str, reason: str) -> None:
    tenancy = Tenancy.from_config(config(auth={"enabled": True}, tenants=[acme()]))
    with pytest.raises(GatewayError) as caught:
        authenticate(ctx(header), tenancy)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert KEY not in caught.value.message


def test_authorization_does_not_depend_on_the_route_existing() -> None:
    cfg = config(
        backends=[{"name": "b", "url": "http://127.0.0.1:1"}],
        routes=[{"name": "r1", "backends": ["b"]}, {"name": "r2", "backends": ["b"]}],
        tenants=[acme(routes=["r1"])],
    )
    caller = authenticate(ctx(), Tenancy.from_config(cfg))  # auth off: "default", all routes
    authorize(caller, "r2")
    acme_caller = authenticate(
        ctx(f"Bearer {KEY}"),
        Tenancy.from_config(
            cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"enabled": True})})
        ),
    )
    authorize(acme_caller, "r1")
    messages = []
    for name in ("r2", "ghost"):
        with pytest.raises(GatewayError) as caught:
            authorize(acme_caller, name)
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        messages.append(caught.value.message.replace(name, "?"))
    assert messages[0] == messages[1]


def test_tenant_routes_must_exist_in_the_config() -> None:
    with pytest.raises(ValueError, match=r"tenants\[0\]\.routes: unknown route 'nope'"):
        config(tenants=[acme(routes=["nope"])])


def test_priority_header_only_when_allowed_and_never_above_the_tenant() -> None:
    plain = Tenancy.from_config(config(tenants=[{"name": "default", "priority": 3}]))
    assert priority(plain.anonymous, ctx(priority_hint="9")) == 3  # not allowed: ignored
    allowed = Tenancy.from_config(
        config(tenants=[{"name": "default", "priority": 6, "allow_priority_header": True}])
    )
    assert priority(allowed.anonymous, ctx()) == 6
    assert priority(allowed.anonymous, ctx(priority_hint="0")) == 0
    for bad in ("7", "-1", "high"):
        with pytest.raises(GatewayError) as caught:
            priority(allowed.anonymous, ctx(priority_hint=bad))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.violations[0].field == "x-priority"


def prepared(inputs: str, **parameters: Any) -> PreparedRequest:
    return PreparedRequest(
        inputs=inputs,
        parameters=TGIParameters(**parameters),
        chat=False,
        tokens=False,
        seed=None,
    )


class _Info:
    def __init__(self, max_input: int | None, max_total: int | None) -> None:
        self.max_input_tokens = max_input
        self.max_total_tokens = max_total


def route(max_input: int | None = None, max_total: int | None = None) -> Route:
    class _Replica:
        info = _Info(max_input, max_total)

    pool = Pool(name="p", replicas=(_Replica(),), picker=LeastLoad())  # type: ignore[arg-type]
    return Route(name="r", target=Target(((pool, 1.0),)))


def test_the_token_budget_bounds_prompt_and_total() -> None:
    text = "héllo"  # 6 UTF-8 bytes
    assert token_budget(prepared(text, max_new_tokens=10), route()).prompt == 8
    assert token_budget(prepared(text, max_new_tokens=10), route()).total == 18
    assert token_budget(prepared(text, max_new_tokens=10, truncate=3), route()).prompt == 3
    assert token_budget(prepared("x" * 100, max_new_tokens=10), route(50, 55)).total == 55
    assert token_budget(prepared(text), route(None, 2048)).total == 2048
    assert token_budget(prepared(text), route()).total == 8 + UNBOUNDED_NEW_TOKENS
