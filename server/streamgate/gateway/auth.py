"""Authentication and authorization of a call: API key → caller; may it use this route?

Neither error tells whether a route exists: a tenant limited to some routes gets
PERMISSION_DENIED for every other name, known or not.
"""

from __future__ import annotations

import grpc

from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason, Violation
from streamgate.tenancy import Caller, Tenancy

__all__ = ["authenticate", "authorize", "priority"]

_BEARER = "bearer "


def authenticate(ctx: RequestContext, tenancy: Tenancy) -> Caller:
    """The caller of the request; UNAUTHENTICATED for a missing or unknown key."""
    if not tenancy.auth_enabled:
        return tenancy.anonymous
    header = ctx.authorization.strip()
    if not header:
        raise GatewayError(
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.API_KEY_MISSING,
            "an API key is required: send the metadata 'authorization: Bearer <key>'",
        )
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
        raise GatewayError(
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.API_KEY_INVALID,
            "the authorization metadata must be 'Bearer <key>'",
        )
    key = tenancy.keys.lookup(header[len(_BEARER) :].strip())
    if key is None:
        raise GatewayError(
            grpc.StatusCode.UNAUTHENTICATED, Reason.API_KEY_INVALID, "unknown API key"
        )
    return Caller(key.tenant, key)


def authorize(caller: Caller, route: str) -> None:
    """PERMISSION_DENIED unless the caller's tenant may use `route`."""
    if not caller.tenant.may_use(route):
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.ROUTE_NOT_ALLOWED,
            f"tenant '{caller.tenant.name}' may not use the model '{route}'",
            metadata={"tenant": caller.tenant.name, "model": route},
        )


def priority(caller: Caller, ctx: RequestContext) -> int:
    """The request's place in the admission queue: the tenant's priority, or `x-priority`
    (0 to the tenant's priority) when the tenant allows it; INVALID_ARGUMENT for a bad one."""
    tenant = caller.tenant
    hint = ctx.priority_hint.strip()
    if not hint or not tenant.allow_priority_header:
        return tenant.priority
    if not hint.isdigit() or int(hint) > tenant.priority:
        message = f"must be an integer from 0 to {tenant.priority} (got '{hint[:32]}')"
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
            f"x-priority: {message}",
            violations=[Violation("x-priority", message)],
        )
    return int(hint)
