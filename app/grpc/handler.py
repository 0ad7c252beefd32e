"""The gRPC hot path: every call is forwarded as bytes; `ModelInfer` is also monitored.

`ModelInfer` is decoded, validated, forwarded unchanged, and its answer observed and logged
exactly like an HTTP inference request (`app.api.proxy.Proxy.handle`), with its own metric
children (`protocol="v2-grpc"`) over the same validators, statistics and windows, and mirrored
to the shadow's gRPC endpoint when one is set. Every other
method, known or not, is relayed with its status code, details and metadata.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import grpc.aio
import structlog

from app.api.models import ModelRouter, MonitoredModel
from app.api.observation import (
    Observers,
    keep_answer,
    observe_predictions,
    rejection_reason,
    request_record,
    violation_summary,
)
from app.api.proxy import REQUEST_ID, request_id_of, trace_id
from app.errors import (
    DecodeError,
    InferSightError,
    PayloadTooLarge,
    RequestError,
    ValidationFailed,
)
from app.grpc.decode import decode_request, decode_response, parse_request
from app.grpc.shadow_call import ShadowCall
from app.grpc.status import http_status
from app.monitoring.batch import Batch, Predictions
from app.monitoring.validator import BatchReport
from app.telemetry.metrics import Metrics, ModelMetrics, status_class
from app.telemetry.request_log import RequestLog

log = structlog.get_logger("infersight.grpc")

PROTOCOL = "v2-grpc"
SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
UNARY = frozenset(
    f"/{SERVICE}/{m}"
    for m in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")
)
"""The protocol's other methods (all unary); any other method is relayed as a stream."""

Metadata = Sequence[tuple[str, str | bytes]]
_NOT_FORWARDED = frozenset({"user-agent", "content-type", "te", "x-request-id"})
_CODES = {
    DecodeError: grpc.StatusCode.INVALID_ARGUMENT,
    ValidationFailed: grpc.StatusCode.INVALID_ARGUMENT,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_UPSTREAM_ERRORS = {
    grpc.StatusCode.UNAVAILABLE: ("unavailable", "upstream_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("timeout", "upstream_timeout"),
}
"""Upstream codes with their `infersight_upstream_duration_seconds` outcome and log error."""


def forwardable(metadata: Metadata) -> list[tuple[str, str | bytes]]:
    """Metadata worth passing on: not gRPC's own (`grpc-*`, pseudo-headers, transport
    headers) and not the request id, which the sidecar sets itself."""
    return [
        (k, v) for k, v in metadata if k not in _NOT_FORWARDED and not k.startswith(("grpc-", ":"))
    ]


class ModelTable:
    """The HTTP router's models with metric children labelled `protocol="v2-grpc"`: the
    validators, statistics, windows and version trackers are the same objects."""

    def __init__(self, router: ModelRouter, metrics: Metrics) -> None:
        self.models = {
            name: replace(m, metrics=ModelMetrics(metrics, name, PROTOCOL))
            for name, m in router.models.items()
        }
        other = router.other
        self.other = replace(other, metrics=ModelMetrics(metrics, other.name, PROTOCOL))

    def resolve(self, name: str) -> MonitoredModel:
        """The monitored model for a request's `model_name` (unknown → `__other__`)."""
        return self.models.get(name, self.other)


class UpstreamFailed(Exception):
    """The upstream answered a non-OK status (or could not be reached)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, initial: Metadata, trailing: Metadata
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.initial = initial
        self.trailing = trailing


@dataclass(slots=True)
class _Call:
    """What one ModelInfer call came to, for its metrics and log line."""

    model: MonitoredModel
    request_id: str
    trace_id: str | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    version: str | None = None
    batch: Batch | None = None
    report: BatchReport | None = None
    reason: str | None = None
    error: str | None = None
    upstream_ms: float | None = None
    elapsed: float | None = None
    """Seconds from the call's arrival to its answer (set once it is counted)."""
    body: bytes = b""
    forwarded: Metadata = ()
    """The message and metadata sent to the primary (kept for a shadow)."""


class GrpcProxy:
    """Serves the calls of one gRPC server by forwarding them to one upstream channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        models: ModelTable,
        request_log: RequestLog,
        observers: Observers,
        max_rows: int,
        timeout_seconds: float,
        max_message_bytes: int,
        shadow_channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.channel = channel
        self.max_message_bytes = max_message_bytes
        self._shadow = (
            shadow_channel.unary_unary(INFER)
            if shadow_channel is not None and observers.shadow is not None
            else None
        )
        self.models = models
        self.request_log = request_log
        self.observers = observers
        self.max_rows = max_rows
        self.timeout = timeout_seconds
        self._infer = channel.unary_unary(INFER)
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        return self.timeout if remaining is None else max(0.0, min(self.timeout, remaining))

    async def infer(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Serve one ModelInfer call: decode, validate, forward, observe, log."""
        start = time.perf_counter()
        metadata = tuple(context.invocation_metadata() or ())
        text = {k: v for k, v in metadata if isinstance(v, str)}
        call = _Call(
            self.models.other,
            request_id_of(text.get(REQUEST_ID)),
            trace_id(text.get("traceparent")),
        )
        initial: list[tuple[str, str | bytes]] = []
        trailing: Metadata = ()
        answer: bytes | None = None
        try:
            try:
                msg = parse_request(request)
                call.model = model = self.models.resolve(msg.model_name)
                call.version = msg.model_version or None
                if len(request) > self.max_message_bytes:
                    raise PayloadTooLarge(
                        f"message of {len(request)} bytes is over the "
                        f"{self.max_message_bytes}-byte limit (grpc.max_message_bytes)"
                    )
                if model.validator is not None:
                    self._check(call, msg)
                answer, initial, trailing = await self._forward(call, request, metadata, context)
            except RequestError as exc:
                call.code = _CODES.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
                call.details, call.error = exc.message, exc.type_name
                call.reason = rejection_reason(exc)
                call.model.metrics.rejected[call.reason].inc()
                if call.batch is not None:
                    call.model.metrics.rejected_rows.inc(call.batch.n_rows)
            except UpstreamFailed as exc:
                call.code, call.details = exc.code, exc.details
                initial, trailing = forwardable(exc.initial), exc.trailing
            # Counted and queued before anything is sent (abort sends the status, then raises):
            # a client that has its answer finds it in the metrics and, a loop turn later, the
            # log. Observing the answer waits for that turn: the client never waits for it.
            self._finish(call, start, answer, initial)
            await context.send_initial_metadata([*initial, (REQUEST_ID, call.request_id)])
            if answer is not None:
                context.set_trailing_metadata(tuple(trailing))
                return answer
            await context.abort(call.code, call.details, tuple(trailing))
            raise AssertionError("abort returns by raising")  # pragma: no cover
        except asyncio.CancelledError:  # the client went away (or its deadline passed)
            if call.elapsed is None:
                call.code, call.error = grpc.StatusCode.CANCELLED, "client_cancelled"
                self._finish(call, start, None, ())
            raise

    def _check(self, call: _Call, msg: Any) -> None:
        """Decode and validate (a monitoring bug forwards the request unchecked)."""
        model = call.model
        assert model.validator is not None
        assert model.stats is not None
        try:
            batch = decode_request(msg, model.feature_order)
            if batch.n_rows == 0:
                raise DecodeError("the request holds no rows; send at least one")
            if batch.n_rows > self.max_rows:
                raise PayloadTooLarge(
                    f"request has {batch.n_rows} rows; the limit is {self.max_rows}"
                )
            report = model.validator.validate(batch)
            model.stats.observe_inputs(report)
            model.metrics.rows.inc(batch.n_rows)
        except InferSightError:
            raise
        except Exception as exc:  # fail open: a monitoring bug must not fail a prediction
            log.exception("request.check_failed", model=model.name, error=repr(exc))
            model.metrics.monitoring_errors["check"].inc()
            return
        call.batch, call.report = batch, report
        if report.rejected:
            raise ValidationFailed(violation_summary(report))

    async def _forward(
        self,
        call: _Call,
        request: bytes,
        metadata: Metadata,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> tuple[bytes, list[tuple[str, str | bytes]], Metadata]:
        fwd = [*forwardable(metadata), (REQUEST_ID, call.request_id)]
        if self._shadow is not None:
            call.body, call.forwarded = request, fwd
        upstream = call.model.metrics.upstream
        t0 = time.perf_counter()
        rpc = self._infer(request, metadata=fwd, timeout=self._deadline(context))
        try:
            answer = await rpc
        except grpc.aio.AioRpcError as exc:
            waited = time.perf_counter() - t0
            call.upstream_ms = round(waited * 1000, 3)
            outcome, call.error = _UPSTREAM_ERRORS.get(exc.code(), ("error_status", None))
            upstream[outcome].observe(waited)
            raise UpstreamFailed(
                exc.code(),
                exc.details() or "",
                tuple(exc.initial_metadata() or ()),
                tuple(exc.trailing_metadata() or ()),
            ) from None
        waited = time.perf_counter() - t0
        call.upstream_ms = round(waited * 1000, 3)
        upstream["ok"].observe(waited)
        initial = forwardable(tuple(await rpc.initial_metadata() or ()))
        trailing = tuple(await rpc.trailing_metadata() or ())
        return answer, initial, trailing

    def _finish(self, call: _Call, start: float, answer: bytes | None, initial: Metadata) -> None:
        """Count the call, and queue its observation and log line for the next loop turn."""
        call.elapsed = elapsed = time.perf_counter() - start
        metrics = call.model.metrics
        metrics.requests[status_class(http_status(call.code))].inc()
        metrics.duration.observe(elapsed)
        asyncio.get_running_loop().call_soon(self._after, call, answer, initial)

    def _after(self, call: _Call, answer: bytes | None, initial: Metadata) -> None:
        """Windows, prediction statistics, version, feedback, then the log line."""
        predictions: Predictions | None = None
        model = call.model
        if answer is not None:
            try:
                predictions = self._observe(call, answer, initial)
            except Exception as exc:  # a monitoring bug must not cost the log line
                log.exception("request.observe_failed", model=model.name, error=repr(exc))
                model.metrics.monitoring_errors["observe"].inc()
        self.request_log.submit(
            request_record(
                self.request_log,
                model,
                request_id=call.request_id,
                trace_id=call.trace_id,
                version=call.version,
                protocol=PROTOCOL,
                status=http_status(call.code),
                grpc_status=call.code.name,
                elapsed=call.elapsed or 0.0,
                upstream_ms=call.upstream_ms,
                batch=call.batch,
                report=call.report,
                rejected=call.reason,
                error=call.error,
                predictions=predictions,
            )
        )

    def _observe(self, call: _Call, answer: bytes, initial: Metadata) -> Predictions | None:
        model = call.model
        if model.windows is not None and call.report is not None and call.batch is not None:
            model.windows.observe_inputs(call.report.columns, call.batch.columns)
        stats = model.stats
        if stats is None:
            return None
        pred = stats.prediction
        try:
            predictions = decode_response(
                answer,
                pred.profile.output_name if pred else None,
                pred.profile.column if pred else None,
            )
        except DecodeError as exc:
            log.warning("response.undecodable", model=model.name, error=str(exc)[:200])
            return None
        header = self.observers.version_header
        if header is not None and predictions.model_version is None:
            value = next((v for k, v in initial if k == header), None)
            predictions.model_version = value if isinstance(value, str) else None
        observe_predictions(model, predictions)
        keep_answer(model, self.observers, call.request_id, call.batch, predictions)
        shadow = self.observers.shadow
        if self._shadow is not None and shadow is not None:
            shadow.offer_call(
                model.name, ShadowCall(self._shadow, call.body, call.forwarded), predictions
            )
        return predictions

    async def relay_unary(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        """Forward one unary call unchanged (status, details and metadata both ways)."""
        stub = self._unary.get(method)
        if stub is None:
            stub = self._unary[method] = self.channel.unary_unary(method)
        metadata = tuple(context.invocation_metadata() or ())
        request_id = _request_id(metadata)
        fwd = [*forwardable(metadata), (REQUEST_ID, request_id)]
        rpc = stub(request, metadata=fwd, timeout=self._deadline(context))
        try:
            answer: bytes = await rpc
        except grpc.aio.AioRpcError as exc:
            await context.send_initial_metadata(
                [*forwardable(tuple(exc.initial_metadata() or ())), (REQUEST_ID, request_id)]
            )
            await context.abort(
                exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ())
            )
        initial = forwardable(tuple(await rpc.initial_metadata() or ()))
        await context.send_initial_metadata([*initial, (REQUEST_ID, request_id)])
        context.set_trailing_metadata(tuple(await rpc.trailing_metadata() or ()))
        return answer

    async def relay_stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        """Forward a call of a method this sidecar does not know, of any cardinality."""
        metadata = tuple(context.invocation_metadata() or ())
        request_id = _request_id(metadata)
        fwd = [*forwardable(metadata), (REQUEST_ID, request_id)]
        remaining = context.time_remaining()
        rpc = self.channel.stream_stream(method)(metadata=fwd, timeout=remaining)

        async def pump() -> None:
            async for message in requests:
                await rpc.write(message)
            await rpc.done_writing()

        writer = asyncio.create_task(pump())
        try:
            initial = forwardable(tuple(await rpc.initial_metadata() or ()))
            await context.send_initial_metadata([*initial, (REQUEST_ID, request_id)])
            async for message in rpc:
                yield message
            context.set_trailing_metadata(tuple(await rpc.trailing_metadata() or ()))
        except grpc.aio.AioRpcError as exc:
            await context.abort(
                exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ())
            )
        finally:
            writer.cancel()


def _request_id(metadata: Metadata) -> str:
    value = next((v for k, v in metadata if k == REQUEST_ID), None)
    return request_id_of(value if isinstance(value, str) else None)


class Routes:
    """Every method: ModelInfer monitored, the protocol's others relayed as unary calls, and
    anything else relayed as a stream (any cardinality has the same wire form)."""

    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            method: self._relay(method) for method in UNARY
        }
        self._handlers[INFER] = grpc.unary_unary_rpc_method_handler(proxy.infer)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        return handler if handler is not None else self._relay(method)

    def _relay(self, method: str) -> grpc.RpcMethodHandler[Any, Any]:
        proxy = self.proxy
        if method in UNARY:

            async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                return await proxy.relay_unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(unary)

        async def stream(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            async for message in proxy.relay_stream(method, requests, context):
                yield message

        return grpc.stream_stream_rpc_method_handler(stream)
