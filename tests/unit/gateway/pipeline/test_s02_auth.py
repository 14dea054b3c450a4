"""Access: the API key in `authorization` → the caller; whether the caller may use a route
(without learning whether it exists); the caller's queue priority."""

from __future__ import annotations

from typing import Any

import pytest

from streamgate.config import GatewayConfig
from streamgate.gateway.pipeline.errors import Code, GatewayError, Reason
from streamgate.gateway.pipeline.s02_auth import authenticate, authorize, priority
from streamgate.routing import RouteTable
from streamgate.tenancy import Tenancy, hash_key
from support.routes import route

KEY = "sg-unit-test-key"
ROUTES = RouteTable([route("r1"), route("r2")], default="r1")


def tenancy(*, auth: bool = False, **sections: Any) -> Tenancy:
    """Tenants of a configuration with the routes of ROUTES."""
    routes = [{"name": r.name, "backends": ["b"]} for r in ROUTES]
    return Tenancy.from_config(
        GatewayConfig.model_validate(
            {
                "auth": {"enabled": auth},
                "backends": [{"name": "b", "url": "http://127.0.0.1:1"}],
                "routes": routes,
                **sections,
            }
        )
    )


def acme(**settings: Any) -> dict[str, Any]:
    return {"name": "acme", "keys": [{"name": "ci", "sha256": hash_key(KEY)}], **settings}


def test_auth_off_makes_every_call_the_default_tenant() -> None:
    caller = authenticate("", tenancy())
    assert caller.tenant.name == "default" and caller.key is None
    assert caller.tenant.may_use("anything")
    assert authenticate("Bearer whatever", tenancy()).tenant.name == "default"


def test_a_configured_default_tenant_applies_without_auth() -> None:
    caller = authenticate(
        "", tenancy(tenants=[{"name": "default", "limits": {"requests_per_minute": 5}}])
    )
    assert caller.tenant.quota.limits.requests_per_minute == 5


def test_a_bearer_key_is_its_tenants_in_any_case_of_the_scheme() -> None:
    tenants = tenancy(
        auth=True,
        tenants=[acme(), {"name": "beta", "keys": [{"name": "env", "sha256": hash_key("sg-b")}]}],
    )
    assert authenticate(f"Bearer {KEY}", tenants).tenant.name == "acme"
    beta = authenticate("bearer sg-b", tenants)
    assert (beta.tenant.name, beta.key.label if beta.key else "") == ("beta", "beta/env")
    assert authenticate(f"  BEARER   {KEY}  ", tenants).tenant.name == "acme"


@pytest.mark.parametrize(
    ("header", "reason"),
    [("", "API_KEY_MISSING"), ("Bearer ", "API_KEY_INVALID"), (KEY, "API_KEY_INVALID"),
     ("Bearer sg-wrong", "API_KEY_INVALID"), ("Basic abc", "API_KEY_INVALID")],
)  # fmt: skip
def test_authentication_errors(header: str, reason: str) -> None:
    with pytest.raises(GatewayError) as caught:
        authenticate(header, tenancy(auth=True, tenants=[acme()]))
    assert (caught.value.code, caught.value.reason) == (Code.UNAUTHENTICATED, reason)
    assert KEY not in caught.value.message


def test_authorization_does_not_depend_on_the_route_existing() -> None:
    anyone = authenticate("", tenancy(tenants=[acme(routes=["r1"])]))  # auth off: all routes
    assert authorize(anyone, "r2", ROUTES).name == "r2"
    acme_caller = authenticate(f"Bearer {KEY}", tenancy(auth=True, tenants=[acme(routes=["r1"])]))
    assert authorize(acme_caller, "r1", ROUTES).name == "r1"
    messages = []
    for name in ("r2", "ghost"):
        with pytest.raises(GatewayError) as caught:
            authorize(acme_caller, name, ROUTES)
        assert caught.value.code == Code.PERMISSION_DENIED
        assert caught.value.reason == Reason.ROUTE_NOT_ALLOWED
        messages.append(caught.value.message.replace(name, "?"))
    assert messages[0] == messages[1]


def test_an_allowed_name_that_is_no_route_is_not_found_and_empty_is_the_default() -> None:
    caller = tenancy().anonymous
    assert authorize(caller, "", ROUTES).name == "r1"
    with pytest.raises(GatewayError) as caught:
        authorize(caller, "ghost", ROUTES)
    assert (caught.value.code, caught.value.reason) == (Code.NOT_FOUND, Reason.ROUTE_NOT_FOUND)
    assert caught.value.metadata == {"model": "ghost", "models": "r1,r2"}


def test_priority_header_only_when_allowed_and_never_above_the_tenant() -> None:
    plain = tenancy(tenants=[{"name": "default", "priority": 3}])
    assert priority(plain.anonymous, "9") == 3  # not allowed: ignored
    allowed = tenancy(tenants=[{"name": "default", "priority": 6, "allow_priority_header": True}])
    assert priority(allowed.anonymous, "") == 6
    assert priority(allowed.anonymous, "0") == 0
    for bad in ("7", "-1", "high"):
        with pytest.raises(GatewayError) as caught:
            priority(allowed.anonymous, bad)
        assert caught.value.code == Code.INVALID_ARGUMENT
        assert caught.value.violations[0].field == "x-priority"
