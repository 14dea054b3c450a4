"""`streamgate.v1.AdminService` over gRPC: cache invalidation and statistics, for admin keys
only (the interceptors authenticated the call and end it)."""

from __future__ import annotations

from typing import Any

import grpc

from streamgate.cache import Removed, SharedTierUnavailable
from streamgate.gateway.grpc.interceptors import current_call
from streamgate.gateway.pipeline.errors import GatewayError, Reason, Violation, invalid
from streamgate.gateway.pipeline.s01_call import Call
from streamgate.gateway.pipeline.s05_cache import ResponseCache
from streamgate.telemetry.logging import get_logger
from streamgate.tenancy import Tenancy
from streamgate_client.v1 import admin_pb2 as admin_pb
from streamgate_client.v1 import admin_pb2_grpc as admin_grpc

__all__ = ["AdminServicer"]

log = get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_grpc.AdminServiceServicer):
    """See the proto; every call must come from an admin tenant."""

    def __init__(self, tenancy: Tenancy, cache: ResponseCache) -> None:
        self._tenancy = tenancy
        self._cache = cache

    async def InvalidateCache(
        self, request: admin_pb.InvalidateCacheRequest, context: Context
    ) -> admin_pb.InvalidateCacheResponse:
        """Drop entries by key, namespace, tenant or all, in both tiers."""
        call = _admin_call()
        target = request.WhichOneof("target")
        tenant = call.authenticated.tenant.name
        try:
            removed = await self._invalidate(request)
        except SharedTierUnavailable as err:
            log.warning("cache invalidation incomplete", request_id=call.request_id,
                        tenant=tenant, target=target, error=str(err))  # fmt: skip
            raise GatewayError(
                Reason.CACHE_UNAVAILABLE,
                f"{err}: the shared tier was not invalidated (this gateway's local tier was); "
                "retry",
            ) from None
        log.info("cache invalidated", request_id=call.request_id, tenant=tenant, target=target,
                 removed=removed.local, shared_removed=removed.shared)  # fmt: skip
        return admin_pb.InvalidateCacheResponse(
            removed=removed.local, shared_removed=removed.shared
        )

    async def GetCacheStats(
        self, request: admin_pb.GetCacheStatsRequest, context: Context
    ) -> admin_pb.GetCacheStatsResponse:
        """Entries, bytes and outcome counts."""
        _admin_call()
        cache = self._cache
        tiers, counts = cache.tiers, cache.stats
        return admin_pb.GetCacheStatsResponse(
            enabled=cache.enabled,
            entries=len(tiers.local),
            bytes=max(tiers.local.bytes, 0),
            hits=counts.hits,
            misses=counts.misses,
            bypasses=counts.bypasses,
            coalesced=counts.coalesced,
            evictions=tiers.local.evictions,
            redis=tiers.shared_state,
            redis_hits=counts.redis_hits,
            redis_errors=tiers.shared.errors if tiers.shared is not None else 0,
        )

    async def _invalidate(self, request: admin_pb.InvalidateCacheRequest) -> Removed:
        tiers = self._cache.tiers
        target = request.WhichOneof("target")
        if target == "all" and request.all:
            return await tiers.clear()
        if target == "key":
            try:
                key = bytes.fromhex(request.key)
            except ValueError:
                key = b""
            if len(key) != 16:
                raise _invalid("key", "must be 32 hex digits")
            return await tiers.invalidate(key)
        if target == "namespace" and request.namespace:
            return await tiers.invalidate_scope(request.namespace)
        if target == "tenant" and request.tenant:
            tenant = self._tenancy.tenants.get(request.tenant)
            if tenant is None:
                raise _invalid("tenant", f"unknown tenant '{request.tenant}'")
            return await tiers.invalidate_scope(tenant.cache_namespace)
        raise _invalid("target", "set one of key, namespace, tenant, all (true)")


def _admin_call() -> Call:
    """The current call; PERMISSION_DENIED unless its tenant has admin rights."""
    call = current_call()
    tenant = call.authenticated.tenant
    if not tenant.admin:
        raise GatewayError(Reason.NOT_ADMIN, f"tenant '{tenant.name}' has no admin rights")
    return call


def _invalid(field: str, description: str) -> GatewayError:
    return invalid([Violation(field, description)], f"{field}: {description}")
