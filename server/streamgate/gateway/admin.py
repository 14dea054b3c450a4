"""`streamgate.v1.AdminService`: cache invalidation and statistics, for admin keys only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from streamgate.cache import Removed, SharedTierUnavailable, TieredCache
from streamgate.gateway.auth import authenticate
from streamgate.gateway.context import RequestContext
from streamgate.gateway.errors import GatewayError, Reason, Violation
from streamgate.gateway.service import GenerationService
from streamgate.telemetry.logging import get_logger
from streamgate.tenancy import Tenancy
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import admin_pb2_grpc as admin_grpc

__all__ = ["AdminService"]

log = get_logger(__name__)

_T = TypeVar("_T")


class AdminService(admin_grpc.AdminServiceServicer):
    """See the proto; every call is authenticated and must come from an admin tenant."""

    def __init__(self, tenancy: Tenancy, cache: TieredCache, generation: GenerationService) -> None:
        self._tenancy = tenancy
        self._cache = cache
        self._generation = generation

    async def InvalidateCache(
        self,
        request: admin_pb.InvalidateCacheRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb.InvalidateCacheResponse:
        """Drop entries by key, namespace, tenant or all, in both tiers."""

        async def invalidate(ctx: RequestContext) -> admin_pb.InvalidateCacheResponse:
            target = request.WhichOneof("target")
            try:
                removed = await self._invalidate(request)
            except SharedTierUnavailable as err:
                log.warning("cache invalidation incomplete", request_id=ctx.request_id,
                            tenant=ctx.stats.tenant, target=target, error=str(err))  # fmt: skip
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    Reason.CACHE_UNAVAILABLE,
                    f"{err}: the shared tier was not invalidated (this gateway's local tier "
                    "was); retry",
                ) from None
            log.info("cache invalidated", request_id=ctx.request_id, tenant=ctx.stats.tenant,
                     target=target, removed=removed.local,
                     shared_removed=removed.shared)  # fmt: skip
            return admin_pb.InvalidateCacheResponse(
                removed=removed.local, shared_removed=removed.shared
            )

        return await self._guarded(context, "InvalidateCache", invalidate)

    async def GetCacheStats(
        self,
        request: admin_pb.GetCacheStatsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb.GetCacheStatsResponse:
        """Entries, bytes and outcome counts."""

        async def stats(ctx: RequestContext) -> admin_pb.GetCacheStatsResponse:
            counts = self._generation.cache_counts
            local, shared = self._cache.local, self._cache.shared
            return admin_pb.GetCacheStatsResponse(
                enabled=self._generation.cache_enabled,
                entries=len(local),
                bytes=max(local.bytes, 0),
                hits=counts["hit"],
                misses=counts["miss"],
                bypasses=counts["bypass"],
                coalesced=counts["coalesced"],
                evictions=local.evictions,
                redis=self._cache.shared_state,
                redis_hits=counts["redis_hit"],
                redis_errors=shared.errors if shared is not None else 0,
            )

        return await self._guarded(context, "GetCacheStats", stats)

    async def _guarded(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        body: Callable[[RequestContext], Awaitable[_T]],
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
            return await body(ctx)
        except GatewayError as err:
            await context.abort_with_status(err.to_status(request_id=ctx.request_id))
            raise AssertionError("abort_with_status returned") from None  # pragma: no cover

    async def _invalidate(self, request: admin_pb.InvalidateCacheRequest) -> Removed:
        target = request.WhichOneof("target")
        if target == "all" and request.all:
            return await self._cache.clear()
        if target == "key":
            try:
                key = bytes.fromhex(request.key)
            except ValueError:
                key = b""
            if len(key) != 16:
                raise _invalid("key", "must be 32 hex digits")
            return await self._cache.invalidate(key)
        if target == "namespace" and request.namespace:
            return await self._cache.invalidate_scope(request.namespace)
        if target == "tenant" and request.tenant:
            tenant = self._tenancy.tenants.get(request.tenant)
            if tenant is None:
                raise _invalid("tenant", f"unknown tenant '{request.tenant}'")
            return await self._cache.invalidate_scope(tenant.cache_namespace)
        raise _invalid("target", "set one of key, namespace, tenant, all (true)")


def _invalid(field: str, description: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        f"{field}: {description}",
        violations=[Violation(field, description)],
    )
