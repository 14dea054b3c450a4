"""Stage 2, access: who is calling (API key → caller), and may they use the route they name?

Authentication needs no request body: a transport runs it before the handler (the gRPC door in
an interceptor). Authorization needs the route the request names, so it is a stage. Neither
error tells whether a route exists: a tenant limited to some routes gets PERMISSION_DENIED for
every other name, known or not.
"""

from __future__ import annotations

from streamgate.gateway.pipeline.errors import GatewayError, Reason, Violation
from streamgate.routing import Route, RouteNotFound, RouteTable
from streamgate.tenancy import Caller, Tenancy

__all__ = ["authenticate", "authorize", "priority"]

_BEARER = "bearer "


def authenticate(authorization: str, tenancy: Tenancy) -> Caller:
    """The caller whose `authorization` metadata this is; UNAUTHENTICATED for a missing or
    unknown key."""
    if not tenancy.auth_enabled:
        return tenancy.anonymous
    header = authorization.strip()
    if not header:
        raise GatewayError(
            Reason.API_KEY_MISSING,
            "an API key is required: send the metadata 'authorization: Bearer <key>'",
        )
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
        raise GatewayError(
            Reason.API_KEY_INVALID, "the authorization metadata must be 'Bearer <key>'"
        )
    key = tenancy.keys.lookup(header[len(_BEARER) :].strip())
    if key is None:
        raise GatewayError(Reason.API_KEY_INVALID, "unknown API key")
    return Caller(key.tenant, key)


def authorize(caller: Caller, name: str, routes: RouteTable) -> Route:
    """The route `name` (empty: the default route) if the caller may use it: PERMISSION_DENIED
    first, so that a refused tenant does not learn whether it exists, then NOT_FOUND."""
    if not caller.tenant.may_use(name or routes.default):
        raise GatewayError(
            Reason.ROUTE_NOT_ALLOWED,
            f"tenant '{caller.tenant.name}' may not use the model '{name or routes.default}'",
            metadata={"tenant": caller.tenant.name, "model": name or routes.default},
        )
    try:
        return routes.resolve(name)
    except RouteNotFound as err:
        raise GatewayError(
            Reason.ROUTE_NOT_FOUND,
            str(err),
            metadata={"model": err.name, "models": ",".join(err.known)},
        ) from None


def priority(caller: Caller, hint: str) -> int:
    """The request's place in the admission queue: the tenant's priority, or `x-priority`
    (`hint`, 0 to the tenant's priority) when the tenant allows it; INVALID_ARGUMENT for a bad
    one."""
    tenant = caller.tenant
    hint = hint.strip()
    if not hint or not tenant.allow_priority_header:
        return tenant.priority
    if not hint.isdigit() or int(hint) > tenant.priority:
        message = f"must be an integer from 0 to {tenant.priority} (got '{hint[:32]}')"
        raise GatewayError(
            Reason.INVALID_ARGUMENT,
            f"x-priority: {message}",
            violations=(Violation("x-priority", message),),
        )
    return int(hint)
