"""`streamgate.v1.AdminService`: cache invalidation and statistics, for admin keys only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from streamgate.api.v1 import admin_pb2 as admin_pb
from streamgate.api.v1 import admin_pb2_grpc as admin_grpc
from streamgate.cache import CachedResponse, LocalCache
from streamgate.gateway.auth import authenticate
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason, Violation
from streamgate.gateway.service import GenerationService
from streamgate.telemetry.logging import get_logger
from streamgate.tenancy import Tenancy

__all__ = ["AdminService"]

log = get_logger(__name__)

_T = TypeVar("_T")


class AdminService(admin_grpc.AdminServiceServicer):
    """See the proto; every call is authenticated and must come from an admin tenant."""

    def __init__(self, tenancy: Tenancy, cache: LocalCache, generation: GenerationService) -> None:
        self._tenancy = tenancy
        self._cache = cache
        self._generation = generation

    async def InvalidateCache(
        self,
        request: admin_pb.InvalidateCacheRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb.InvalidateCacheResponse:
        """Drop entries by key, namespace, tenant or all."""

        def invalidate(ctx: RequestContext) -> admin_pb.InvalidateCacheResponse:
            removed = self._invalidate(request)
            log.info("cache invalidated", request_id=ctx.request_id, tenant=ctx.stats.tenant,
                     target=request.WhichOneof("target"), removed=removed)  # fmt: skip
            return admin_pb.InvalidateCacheResponse(removed=removed)

        return await self._guarded(context, "InvalidateCache", invalidate)

    async def GetCacheStats(
        self,
        request: admin_pb.GetCacheStatsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb.GetCacheStatsResponse:
        """Entries, bytes and outcome counts."""

        def stats(ctx: RequestContext) -> admin_pb.GetCacheStatsResponse:
            counts = self._generation.cache_counts
            return admin_pb.GetCacheStatsResponse(
                enabled=self._generation.cache_enabled,
                entries=len(self._cache),
                bytes=max(self._cache.bytes, 0),
                hits=counts["hit"],
                misses=counts["miss"],
                bypasses=counts["bypass"],
                coalesced=counts["coalesced"],
                evictions=self._cache.evictions,
                redis="disabled",
            )

        return await self._guarded(context, "GetCacheStats", stats)

    async def _guarded(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        body: Callable[[RequestContext], _T],
    ) -> _T:
        """Run `body` for an admin caller; any GatewayError becomes the call's status."""
        ctx = RequestContext.from_grpc(context, method)
        try:
            caller = authenticate(ctx, self._tenancy)
            ctx.stats.tenant = caller.tenant.name
            if not caller.tenant.admin:
                raise GatewayError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    Reason.NOT_ADMIN,
                    f"tenant '{caller.tenant.name}' has no admin rights",
                )
            return body(ctx)
        except GatewayError as err:
            await context.abort_with_status(err.to_status(request_id=ctx.request_id))
            raise AssertionError("abort_with_status returned") from None  # pragma: no cover

    def _invalidate(self, request: admin_pb.InvalidateCacheRequest) -> int:
        target = request.WhichOneof("target")
        if target == "all" and request.all:
            return self._cache.clear()
        if target == "key":
            try:
                key = bytes.fromhex(request.key)
            except ValueError:
                key = b""
            if len(key) != 16:
                raise _invalid("key", "must be 32 hex digits")
            return 1 if self._cache.invalidate(key) else 0
        if target == "namespace" and request.namespace:
            return self._cache.invalidate_where(_within(request.namespace))
        if target == "tenant" and request.tenant:
            tenant = self._tenancy.tenants.get(request.tenant)
            if tenant is None:
                raise _invalid("tenant", f"unknown tenant '{request.tenant}'")
            return self._cache.invalidate_where(_within(tenant.cache_namespace))
        raise _invalid("target", "set one of key, namespace, tenant, all (true)")


def _within(namespace: str) -> Callable[[CachedResponse], bool]:
    """Entries stored under `namespace` or a scope inside it."""

    def matches(entry: CachedResponse) -> bool:
        return entry.scope == namespace or entry.scope.startswith(namespace + "/")

    return matches


def _invalid(field: str, description: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        f"{field}: {description}",
        violations=[Violation(field, description)],
    )
