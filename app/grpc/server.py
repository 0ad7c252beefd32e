"""The gRPC server (grpc.aio, on the sidecar's event loop) and its channel to the upstream."""

from __future__ import annotations

import grpc
import grpc.aio
import structlog

from app.api.models import ModelRouter
from app.api.observation import Observers
from app.config import Settings
from app.errors import ConfigError
from app.grpc.handler import GrpcProxy, ModelTable, Routes
from app.telemetry.metrics import Metrics
from app.telemetry.request_log import RequestLog

log = structlog.get_logger("infersight.grpc")

GRACE_SECONDS = 10.0
"""On shutdown, calls in flight get this long to finish."""
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # the model server's answers are relayed whole
    ("grpc.max_send_message_length", -1),
    # Reconnect to a restarted model server within a second or two, not gRPC's two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def receive_limit(max_message_bytes: int) -> int:
    """What grpcio may receive: twice the limit the handler enforces, so that most messages
    over it reach the handler, which counts and logs them before refusing them; larger ones
    grpcio refuses itself (RESOURCE_EXHAUSTED, not counted), which bounds memory."""
    return min(2 * max_message_bytes, 2**31 - 1)


class GrpcServer:
    """`inference.GRPCInferenceService` (and any other method) in front of the upstream."""

    def __init__(
        self,
        settings: Settings,
        router: ModelRouter,
        metrics: Metrics,
        request_log: RequestLog,
        observers: Observers,
    ) -> None:
        s = settings.grpc
        if s.port is None:
            raise ConfigError("grpc.port is not set")
        if s.upstream is None:
            raise ConfigError("grpc.port needs grpc.upstream (the model server's HOST:PORT)")
        if settings.protocol != "v2":
            raise ConfigError("gRPC serves the Open Inference Protocol: it needs protocol v2")
        self.settings = settings
        self.address = f"{settings.host}:{s.port}"
        self.upstream = s.upstream
        self.max_message_bytes = s.max_message_bytes or settings.validation.max_body_bytes
        self.models = ModelTable(router, metrics)
        self.request_log = request_log
        self.observers = observers
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._shadow_channel: grpc.aio.Channel | None = None

    async def start(self) -> int:
        """Open the channel, bind and start serving; the bound port.

        Raises:
            ConfigError: the port cannot be bound.
        """
        self._channel = grpc.aio.insecure_channel(self.upstream, options=_CHANNEL_OPTIONS)
        shadow = self.settings.shadow.grpc_address
        if shadow is not None and self.observers.shadow is not None:
            self._shadow_channel = grpc.aio.insecure_channel(shadow, options=_CHANNEL_OPTIONS)
        proxy = GrpcProxy(
            self._channel,
            self.models,
            self.request_log,
            self.observers,
            self.settings.validation.max_rows,
            self.settings.upstream.timeout_seconds,
            self.max_message_bytes,
            self._shadow_channel,
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", receive_limit(self.max_message_bytes)),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ]
        )
        server.add_generic_rpc_handlers((Routes(proxy),))
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            await self._close_channels()
            raise ConfigError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        await server.start()
        self._server = server
        log.info(
            "grpc.started",
            address=self.address,
            port=self.port,
            upstream=self.upstream,
            shadow=shadow if self._shadow_channel is not None else None,
        )
        return self.port

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Stop accepting calls, let those in flight finish (up to `grace`), close the channel."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self._close_channels()

    async def _close_channels(self) -> None:
        for channel in (self._channel, self._shadow_channel):
            if channel is not None:
                await channel.close()
        self._channel = self._shadow_channel = None
