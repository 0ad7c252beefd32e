"""The Open Inference Protocol over gRPC: an inbound transport beside the HTTP one (`app.api`).

`start_grpc` is what the composition root calls; gRPC and the generated messages are imported
only when a gRPC port is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:
    from app.api.models import ModelRouter
    from app.api.observation import Observers
    from app.grpc.server import GrpcServer
    from app.telemetry.metrics import Metrics
    from app.telemetry.request_log import RequestLog


async def start_grpc(
    settings: Settings,
    router: ModelRouter,
    metrics: Metrics,
    request_log: RequestLog,
    observers: Observers,
) -> GrpcServer | None:
    """Start the gRPC server when `grpc.port` is set (None otherwise).

    Raises:
        ConfigError: gRPC is misconfigured or its port cannot be bound.
    """
    if settings.grpc.port is None:
        return None
    from app.grpc.server import GrpcServer

    server = GrpcServer(settings, router, metrics, request_log, observers)
    await server.start()
    return server
