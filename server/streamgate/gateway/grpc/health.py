"""The gateway's serving status as `grpc.health.v1`: SERVING for "" and each of its services
while the fleet has a healthy replica, NOT_SERVING otherwise and for good once draining."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["GrpcHealth"]


class GrpcHealth:
    """Publishes the serving status on the grpc.health.v1 servicer registered on the server
    (a `fleet.health.ServingStatus`)."""

    def __init__(self, services: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._services = ["", *services]

    def register(self, server: grpc.aio.Server) -> None:
        """Serve grpc.health.v1 on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def publish(self, serving: bool) -> None:
        """SERVING or NOT_SERVING for every name."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._services:
            await self.servicer.set(name, status)

    async def drain(self) -> None:
        """NOT_SERVING for good (watchers are told at once)."""
        await self.servicer.enter_graceful_shutdown()
