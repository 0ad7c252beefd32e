"""A ModelInfer call repeated against the shadow model's gRPC endpoint (`shadow.grpc_address`).

The shadow mirror queues it, sends it when a worker is free, and compares the predictions it
decodes with the primary's, exactly as for HTTP requests.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from app.errors import UpstreamTimeout, UpstreamUnavailable
from app.grpc.decode import decode_response
from app.grpc.status import http_status
from app.monitoring.batch import Predictions


class ShadowCall:
    """One call: the client's message and the metadata forwarded to the primary."""

    __slots__ = ("body", "metadata", "stub")

    def __init__(
        self,
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        body: bytes,
        metadata: Any,
    ) -> None:
        self.stub = stub
        self.body = body
        self.metadata = metadata

    async def send(self, seconds: float) -> tuple[int, bytes]:
        """(HTTP-equivalent status, answer); no answer at all raises UpstreamError."""
        try:
            answer: bytes = await self.stub(self.body, metadata=self.metadata, timeout=seconds)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UpstreamTimeout(f"the shadow did not answer within {seconds:g} s") from None
            if code is grpc.StatusCode.UNAVAILABLE:
                raise UpstreamUnavailable(f"the shadow is unavailable: {exc.details()}") from None
            return http_status(code), b""
        return 200, answer

    def decode(self, answer: bytes, output: str | None, column: int | None) -> Predictions:
        """The predictions of a ModelInferResponse; raises DecodeError."""
        return decode_response(answer, output, column)
