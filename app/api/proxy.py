"""The hot path: decode, validate, forward the original bytes, observe the answer, log.

Served as plain Starlette routes (cheaper than FastAPI's request handling); the codecs decode
the body themselves.
"""

from __future__ import annotations

import gzip
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from multidict import CIMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.errors import error_body, error_response
from app.api.models import ModelRouter, MonitoredModel
from app.api.observation import (
    Observers,
    keep_answer,
    observe_predictions,
    rejection_reason,
    request_record,
    violation_summary,
)
from app.api.slow_bodies import SlowBodies
from app.errors import (
    DecodeError,
    InferSightError,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    UnsupportedMediaType,
    UpstreamError,
    ValidationFailed,
)
from app.monitoring.batch import Batch, Predictions
from app.monitoring.validator import BatchReport, Violation
from app.protocols.codecs import Codec, media_type
from app.telemetry.metrics import status_class
from app.telemetry.request_log import RequestLog
from app.upstream.client import UpstreamClient, UpstreamResponse, forwardable, outcome_of

log = structlog.get_logger("infersight.proxy")

REQUEST_ID = "x-request-id"
CLIENT_CLOSED_REQUEST = 499
"""The status logged for a request whose client left mid-body (nginx's convention)."""


@dataclass(slots=True)
class ProxyLimits:
    max_body_bytes: int
    max_rows: int
    slow_bodies: SlowBodies | None = None
    """The deadline for receiving a body (none: wait as long as the client takes)."""


_ids = random.Random()  # request ids need uniqueness, not secrecy: 8x cheaper than uuid4
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def request_id_of(value: str | None) -> str:
    """The client's request id when it is a sane token (≤128 printable chars), else a new one."""
    if value and _SAFE_ID.match(value):
        return value
    return f"{_ids.getrandbits(128):032x}"


def upstream_path(request: Request) -> str:
    """The path and query exactly as the client sent them (percent-encoding kept)."""
    scope = request.scope
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`)."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1]
    return None


_CODINGS = ("gzip", "deflate", "x-gzip")


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated up to `limit` bytes (a larger one is refused)."""
    wbits = zlib.MAX_WBITS if encoding == "deflate" else 16 + zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, limit + 1)
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed body is larger than {limit} bytes")
    if not d.eof:
        raise DecodeError(f"{encoding} body is truncated (its compressed stream does not end)")
    return out


class Proxy:
    """The inference handler shared by every protocol."""

    def __init__(
        self,
        codec: Codec,
        router: ModelRouter,
        upstream: UpstreamClient,
        request_log: RequestLog,
        limits: ProxyLimits,
        observers: Observers | None = None,
    ) -> None:
        self.codec = codec
        self.router = router
        self.upstream = upstream
        self.request_log = request_log
        self.limits = limits
        self.observers = observers or Observers()
        self._strings = codec.string_errors

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        """The whole body from the ASGI channel, refused past the size limit and (with
        `slow_bodies`) past the time limit."""
        limit = self.limits.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
        slow = self.limits.slow_bodies
        if slow is not None:
            return await slow.read(lambda: self._receive_all(receive, limit))
        return await self._receive_all(receive, limit)

    @staticmethod
    async def _receive_all(receive: Receive, limit: int) -> bytes:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the usual case: one message
            if len(body) > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            return body
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    async def handle(
        self,
        request: Request,
        model_name: str | None,
        version: str | None,
        respond: Callable[[Response | RawResponse], Awaitable[None]] | None = None,
    ) -> Response | RawResponse:
        """Serve one inference request.

        With `respond`, the answer is sent through it as soon as it is known, and the work
        that only observes it (prediction statistics, windows, feedback store, shadow, log
        line) runs after: the client never waits for monitoring.
        """
        start = time.perf_counter()
        scope = request.scope
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(raw_headers)  # ASGI servers lower-case names; one dict, O(1) lookups
        request_id = request_id_of(headers.get(REQUEST_ID))
        model = self.router.resolve(model_name)
        batch: Batch | None = None
        report: BatchReport | None = None
        predictions: Predictions | None = None
        upstream_ms: float | None = None
        reason: str | None = None
        error_type: str | None = None
        response: Response | RawResponse
        answer: UpstreamResponse | None = None
        path_qs, body = "", b""
        fwd: CIMultiDict[str] = CIMultiDict()
        try:
            body = await self._read_body(request.receive, headers.get("content-length"))
            if model.validator is not None:
                try:
                    batch, report = self._check(model, body, headers)
                except RecursionError:  # a value nested as deeply as the JSON parser allows
                    raise DecodeError("body is nested too deeply to check") from None
                except InferSightError:
                    raise
                except Exception as exc:  # fail open: a monitoring bug must not fail a prediction
                    log.exception("request.check_failed", model=model.name, error=repr(exc))
                    model.metrics.monitoring_errors["check"].inc()
                    batch, report = None, None
                if report is not None and report.rejected:
                    raise ValidationFailed(violation_summary(report), _details(report))
            fwd = forwardable(raw_headers)
            if REQUEST_ID not in fwd:
                fwd[REQUEST_ID] = request_id
            path_qs = upstream_path(request)
            response, upstream_ms, answer = await self._forward(
                model, path_qs, fwd, body, request_id
            )
        except RequestTimeout as exc:  # a stalled client, not a rejected body
            error_type = exc.type_name
            response = error_response(
                exc, {REQUEST_ID: request_id, "connection": "close"}, string_error=self._strings
            )
        except RequestError as exc:
            reason = rejection_reason(exc)
            model.metrics.rejected[reason].inc()
            if batch is not None:
                model.metrics.rejected_rows.inc(batch.n_rows)
            error_type = exc.type_name
            response = error_response(exc, {REQUEST_ID: request_id}, string_error=self._strings)
        except UpstreamError as exc:
            error_type = exc.type_name
            response = error_response(exc, {REQUEST_ID: request_id}, string_error=self._strings)
        except ClientDisconnect:  # gone before the whole body arrived: nobody reads an answer
            error_type = "client_disconnected"
            response = Response(
                error_body(
                    error_type,
                    "the client closed the connection mid-body",
                    string_error=self._strings,
                ),
                status_code=CLIENT_CLOSED_REQUEST,
                media_type="application/json",
                headers={REQUEST_ID: request_id},
            )
        elapsed = time.perf_counter() - start
        status = response.status_code
        model.metrics.requests[status_class(status)].inc()
        model.metrics.duration.observe(elapsed)
        try:
            if respond is not None:
                await respond(response)
            if answer is not None and 200 <= answer.status < 300:  # rows the model answered
                try:
                    predictions = self._observe_answer(
                        model, request_id, batch, report, answer, path_qs, fwd, body
                    )
                except Exception as exc:  # a monitoring bug must not cost the log line
                    log.exception("request.observe_failed", model=model.name, error=repr(exc))
                    model.metrics.monitoring_errors["observe"].inc()
        finally:  # the log line is written even if sending the answer failed or was cancelled
            self.request_log.submit(
                request_record(
                    self.request_log,
                    model,
                    request_id=request_id,
                    trace_id=trace_id(headers.get("traceparent")),
                    version=version,
                    protocol=self.codec.name,
                    status=status,
                    elapsed=elapsed,
                    upstream_ms=upstream_ms,
                    batch=batch,
                    report=report,
                    rejected=reason,
                    error=error_type,
                    predictions=predictions,
                )
            )
        return response

    def _observe_answer(
        self,
        model: MonitoredModel,
        request_id: str,
        batch: Batch | None,
        report: BatchReport | None,
        answer: UpstreamResponse,
        path_qs: str,
        fwd: CIMultiDict[str],
        body: bytes,
    ) -> Predictions | None:
        """Windows, prediction statistics, version, feedback and shadow for a 2xx answer."""
        if model.windows is not None and report is not None and batch is not None:
            model.windows.observe_inputs(report.columns, batch.columns)
        predictions = self._observe(model, answer) if model.stats is not None else None
        if predictions is not None:
            self._after(model, request_id, batch, predictions, path_qs, fwd, body)
        return predictions

    def _check(self, model: MonitoredModel, body: bytes, headers: Any) -> tuple[Batch, BatchReport]:
        assert model.validator is not None
        assert model.stats is not None
        content_type = headers.get("content-type") or ""
        if not self.codec.accepts(content_type):
            accepted = self.codec.accepted()
            raise UnsupportedMediaType(
                f"Content-Type '{media_type(content_type)}' is not accepted by the "
                f"{self.codec.name} protocol; send one of: {', '.join(accepted)}",
                [{"content_type": content_type, "accepted": accepted}],
            )
        raw = body
        encoding = headers.get("content-encoding")
        if encoding:
            encoding = encoding.strip().lower()
            if encoding in _CODINGS:
                try:
                    raw = _inflate(body, encoding, self.limits.max_body_bytes)
                except zlib.error as exc:
                    raise DecodeError(f"body is not valid {encoding}: {exc}") from None
            elif encoding != "identity":
                raise UnsupportedMediaType(
                    f"Content-Encoding '{encoding}' is not supported; send the body as is, "
                    "or compressed with one of: gzip, deflate",
                    [{"content_encoding": encoding, "accepted": ["identity", *_CODINGS[:2]]}],
                )
        binary = self.codec.binary
        framed = headers.get(binary.header) if binary is not None else None
        if binary is not None and framed is not None:
            batch = binary.decode_request(raw, model.feature_order, framed)
        else:
            batch = self.codec.decode_request(raw, model.feature_order, content_type)
        if batch.n_rows == 0:
            raise DecodeError("the request holds no rows; send at least one")
        if batch.n_rows > self.limits.max_rows:
            batch.columns = {}
            raise PayloadTooLarge(
                f"request has {batch.n_rows} rows; the limit is {self.limits.max_rows}"
            )
        report = model.validator.validate(batch)
        model.stats.observe_inputs(report)
        model.metrics.rows.inc(batch.n_rows)
        return batch, report

    def _after(
        self,
        model: MonitoredModel,
        request_id: str,
        batch: Batch | None,
        predictions: Predictions,
        path_qs: str,
        fwd: CIMultiDict[str],
        body: bytes,
    ) -> None:
        """Hand a successful answer to the version tracker, the feedback store and the shadow."""
        keep_answer(model, self.observers, request_id, batch, predictions)
        obs = self.observers
        if obs.shadow is not None:
            obs.shadow.offer(model.name, "POST", path_qs, fwd, body, predictions)

    async def _forward(
        self,
        model: MonitoredModel,
        path_qs: str,
        fwd: CIMultiDict[str],
        body: bytes,
        request_id: str,
    ) -> tuple[RawResponse, float, UpstreamResponse]:
        t0 = time.perf_counter()
        try:
            answer = await self.upstream.request("POST", path_qs, fwd, body)
        except UpstreamError as exc:
            model.metrics.upstream[outcome_of(exc)].observe(time.perf_counter() - t0)
            raise
        waited = time.perf_counter() - t0
        ok = 200 <= answer.status < 300
        model.metrics.upstream["ok" if ok else "error_status"].observe(waited)
        return relay(answer, request_id), round(waited * 1000, 3), answer

    def _observe(self, model: MonitoredModel, answer: UpstreamResponse) -> Predictions | None:
        stats = model.stats
        assert stats is not None
        pred = stats.prediction
        body = answer.body
        try:
            if answer.content_encoding in ("gzip", "deflate"):
                body = _inflate(body, answer.content_encoding, 256 * 1024 * 1024)
            out_name = pred.profile.output_name if pred else None
            column = pred.profile.column if pred else None
            predictions = self.codec.decode_answer(body, out_name, column, answer.raw_headers)
        except (InferSightError, zlib.error, gzip.BadGzipFile) as exc:
            log.warning("response.undecodable", model=model.name, error=str(exc)[:200])
            return None
        header = self.observers.version_header
        if header is not None and predictions.model_version is None:
            predictions.model_version = next(
                (v for k, v in answer.headers if k.lower() == header), None
            )
        observe_predictions(model, predictions)
        return predictions


def _details(report: BatchReport) -> list[dict[str, Any]]:
    """The violations for an error body (a value too deep to show is replaced by a note)."""
    out = []
    for v in report.details:
        try:
            out.append(v.as_detail())
        except RecursionError:
            out.append(Violation(v.row, v.feature, v.kind, _TOO_DEEP, v.policy).as_detail())
    return out


_TOO_DEEP = "<value nested too deeply to show>"


async def passthrough(
    request: Request, upstream: UpstreamClient, *, string_error: bool = False
) -> Response | RawResponse:
    """Forward any other request unchanged (health, metadata, …) without monitoring it
    (`string_error` as in `error_body`)."""
    request_id = request_id_of(request.headers.get(REQUEST_ID))
    body = await request.body()
    fwd = forwardable(request.headers.items())
    path_qs = upstream_path(request)
    try:
        answer = await upstream.request(request.method, path_qs, fwd, body or None)
    except UpstreamError as exc:
        return error_response(exc, {REQUEST_ID: request_id}, string_error=string_error)
    return relay(answer, request_id)


class RawResponse:
    """A response with its headers already encoded: two ASGI messages and nothing else (the
    hot path's answer; cheaper than building a framework response)."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes):
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


_REQUEST_ID_RAW = REQUEST_ID.encode()


def relay(answer: UpstreamResponse, request_id: str) -> RawResponse:
    """The upstream's answer as the client's response: status, headers and body unchanged."""
    raw = [(b"content-length", str(len(answer.body)).encode())]
    raw.extend(h for h in answer.raw_headers if h[0] != _REQUEST_ID_RAW)
    raw.append((_REQUEST_ID_RAW, request_id.encode("latin-1", "replace")))
    return RawResponse(answer.status, raw, answer.body)


_INFERENCE_PATHS: dict[str, re.Pattern[str]] = {
    "v2": re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$"),
    "v1": re.compile(r"^/v1/models/(?P<name>[^/:]+):predict$"),
    "mlflow": re.compile(r"^/invocations$"),
}


class InferenceRoutes:
    """Matches a protocol's inference paths (POST only) without the framework's router."""

    def __init__(self, protocol: str, proxy: Proxy) -> None:
        self.pattern = _INFERENCE_PATHS[protocol]
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request if it is an inference call; False when it is not one."""
        if scope["method"] != "POST":
            return False
        m = self.pattern.match(scope["path"])
        if m is None:
            return False
        groups = m.groupdict()
        request = Request(scope, receive)
        responded = False

        async def respond(response: Response | RawResponse) -> None:
            nonlocal responded
            responded = True
            await response(scope, receive, send)

        try:
            await self.proxy.handle(request, groups.get("name"), groups.get("version"), respond)
        except Exception as exc:  # never let a bug turn into a dropped connection
            log.exception("request.unexpected_error", error=repr(exc)[:300])
            if not responded:
                await Response(
                    error_body(
                        "internal_error",
                        "unexpected error in the sidecar",
                        string_error=self.proxy.codec.string_errors,
                    ),
                    status_code=500,
                    media_type="application/json",
                )(scope, receive, send)
        return True
