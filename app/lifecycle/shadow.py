"""The shadow mirror: a candidate model gets a sampled share of the traffic, off the request path.

`offer` is called after the primary has answered; it samples, queues the request and returns at
once. A few workers send queued requests to the shadow model server (same protocol and paths as
the primary, same headers except that an uncompressed answer is asked for), decode its answers
with the primary's codec and compare them row by row with the primary's predictions. Calls of
the gRPC transport arrive through `offer_call` with their own way of being sent and decoded,
and share the queue, the sampling and the metrics. A slow,
failing or absent shadow is only counted: the queue is bounded (overflow is dropped and
counted) and nothing here ever reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from app.config import ShadowSettings, UpstreamSettings
from app.errors import (
    ConfigError,
    InferSightError,
    UpstreamError,
)
from app.monitoring.batch import Predictions
from app.monitoring.profile import Profile
from app.monitoring.shadow_compare import ComparisonSpec, compare
from app.protocols.codecs import Codec
from app.telemetry.shadow_metrics import ShadowMetrics, ShadowModelMetrics
from app.upstream.client import UpstreamClient, outcome_of

log = structlog.get_logger("infersight.shadow")

FAILED = "shadow.failed"
WARN_INTERVAL_SECONDS = 60.0
"""At most one warning line per interval; the lines in between are counted in `suppressed`."""
STOP_GRACE_SECONDS = 2.0
INLINE_BYTES = 64 * 1024
"""Larger shadow answers are decoded and compared on a thread, so the event loop (which serves
the primary's requests) is never held for long."""


class MirroredCall(Protocol):
    """A call of another transport (gRPC) to repeat against the shadow."""

    async def send(self, seconds: float) -> tuple[int, bytes]:
        """Send the call to the shadow, allowing it `seconds`: (HTTP-equivalent status, answer
        body); raises UpstreamError when no answer came."""
        ...

    def decode(self, answer: bytes, output: str | None, column: int | None) -> Predictions:
        """The predictions in an answer; raises InferSightError."""
        ...


@dataclass(slots=True)
class _Job:
    model: str
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes
    primary: Predictions
    call: MirroredCall | None = None


Decode = Callable[[bytes, str | None, int | None], Predictions]
"""(answer body, output name, output column) → the shadow's predictions."""


@dataclass(frozen=True, slots=True)
class _Model:
    spec: ComparisonSpec
    metrics: ShadowModelMetrics


class ShadowMirror:
    """Mirrors sampled requests of profiled models to the shadow model and compares answers."""

    def __init__(
        self,
        settings: ShadowSettings,
        codec: Codec,
        specs: Mapping[str, ComparisonSpec],
        metrics: ShadowMetrics,
        rng: random.Random | None = None,
    ) -> None:
        """Build the mirror (no connection or task until `start`).

        Args:
            settings: the shadow section; `url` or `grpc_address` must be set (HTTP requests
                are mirrored only with `url`; gRPC calls, offered with `offer_call`, only with
                `grpc_address`, by the transport that holds the channel).
            codec: the primary's protocol codec, used to decode the shadow's answers.
            specs: the models to mirror, by metric label, with how to compare each.
            metrics: must hold children for every model in `specs`.
            rng: the sampling source (default: a fresh `random.Random`).

        Raises:
            ConfigError: neither `settings.url` nor `settings.grpc_address` is set.
        """
        if not settings.enabled:
            raise ConfigError("neither shadow.url nor shadow.grpc_address is set")
        self.settings = settings
        self.codec = codec
        self._models = {name: _Model(spec, metrics[name]) for name, spec in specs.items()}
        self._rng = rng or random.Random()
        self._client = (
            UpstreamClient(
                UpstreamSettings(
                    url=settings.url,
                    timeout_seconds=settings.timeout_seconds,
                    connect_timeout_seconds=min(2.0, settings.timeout_seconds),
                    pool_size=settings.max_concurrency,
                )
            )
            if settings.url is not None
            else None
        )
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._last_warning = -WARN_INTERVAL_SECONDS
        self._suppressed = 0

    async def start(self) -> None:
        """Open the connection pool and start `max_concurrency` workers."""
        if self._workers:
            return
        if self._client is not None:
            await self._client.start()
        self._workers = [
            asyncio.create_task(self._work(), name=f"shadow-worker-{i}")
            for i in range(self.settings.max_concurrency)
        ]

    async def stop(self) -> None:
        """Cancel the workers (mirrored requests in flight are abandoned) and close the pool.

        Queued requests are discarded; returns within about `STOP_GRACE_SECONDS` even when
        the shadow hangs.
        """
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=STOP_GRACE_SECONDS)
        self._queue = asyncio.Queue(self.settings.queue_size)
        if self._client is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._client.close(), STOP_GRACE_SECONDS)

    async def drain(self) -> None:
        """Wait until every queued request has been mirrored and compared."""
        await self._queue.join()

    def offer(
        self,
        model: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes,
        primary: Predictions,
    ) -> None:
        """Queue a request the primary has answered, if sampled; never blocks, never raises.

        Args:
            model: the metric label of the model (unknown labels are ignored).
            method: the HTTP method sent to the primary.
            path_qs: path and query as sent to the primary (the shadow gets the same).
            headers: the headers forwarded to the primary (not modified).
            body: the request body forwarded to the primary.
            primary: the primary's decoded predictions.
        """
        if self._client is not None:
            self._enqueue(model, lambda: _Job(model, method, path_qs, headers, body, primary))

    def offer_call(self, model: str, call: MirroredCall, primary: Predictions) -> None:
        """Queue a call of another transport (gRPC) the primary has answered, if sampled;
        never blocks, never raises."""
        self._enqueue(model, lambda: _Job(model, "", "", CIMultiDict(), b"", primary, call))

    def _enqueue(self, model: str, job: Callable[[], _Job]) -> None:
        target = self._models.get(model)
        if target is None or not self._workers:
            return
        try:
            rate = self.settings.sample_rate
            if rate < 1.0 and self._rng.random() >= rate:
                return
            self._queue.put_nowait(job())
        except asyncio.QueueFull:
            target.metrics.dropped.inc()
        except Exception as exc:  # the request path must never fail because of the mirror
            self._warn(model, "offer", repr(exc))

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._mirror(job)
            except Exception as exc:  # a bug in one job must not stop the worker
                self._models[job.model].metrics.errors.inc()
                self._warn(job.model, "unexpected", f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    async def _send(self, job: _Job) -> tuple[int, bytes, Decode]:
        """(status, body, decoder) of the shadow's answer; raises UpstreamError."""
        if job.call is not None:
            status, body = await job.call.send(self.settings.timeout_seconds)
            return status, body, job.call.decode
        assert self._client is not None
        headers = CIMultiDict(job.headers)
        headers["Accept-Encoding"] = "identity"  # the codec reads plain bodies
        answer = await self._client.request(job.method, job.path_qs, headers, job.body)
        codec, raw = self.codec, answer.raw_headers

        def decode(body: bytes, output: str | None, column: int | None) -> Predictions:
            return codec.decode_answer(body, output, column, raw)

        return answer.status, answer.body, decode

    async def _mirror(self, job: _Job) -> None:
        target = self._models[job.model]
        m = target.metrics
        t0 = time.perf_counter()
        try:
            status, body, decode = await self._send(job)
        except UpstreamError as exc:
            self._fail(job.model, m, outcome_of(exc), exc.message)
            return
        m.duration.observe(time.perf_counter() - t0)
        if not 200 <= status < 300:
            self._fail(job.model, m, "error_status", f"status {status}")
            return
        if len(body) > INLINE_BYTES:
            outcome, problem = await asyncio.to_thread(self._evaluate, target, job, body, decode)
        else:
            outcome, problem = self._evaluate(target, job, body, decode)
        if problem is None:
            m.requests[outcome].inc()
        else:
            self._fail(job.model, m, outcome, problem)

    def _evaluate(
        self, target: _Model, job: _Job, body: bytes, decode: Decode
    ) -> tuple[str, str | None]:
        """Decode and compare one answer; (outcome, problem or None). Safe on a thread."""
        spec, m = target.spec, target.metrics
        try:
            shadow = decode(body, spec.output_name, spec.column)
        except InferSightError as exc:
            return "bad_response", f"undecodable answer: {exc.message}"
        result = compare(job.primary.values, shadow.values, spec.mode, self.settings.tolerance)
        if result.shape_mismatch:
            return "ok", (
                f"the shadow answered {len(shadow.values)} rows, "
                f"the primary {len(job.primary.values)}"
            )
        m.comparisons["agree"].inc(result.agree)
        m.comparisons["disagree"].inc(result.disagree)
        observe = m.abs_difference.observe
        for diff in result.differences:
            observe(diff)
        if result.incomparable:
            return "ok", f"{result.incomparable} row(s) without a comparable value on one side"
        return "ok", None

    def _fail(self, model: str, m: ShadowModelMetrics, outcome: str, problem: str) -> None:
        m.requests[outcome].inc()
        m.errors.inc()
        self._warn(model, outcome, problem)

    def _warn(self, model: str, outcome: str, problem: str) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_INTERVAL_SECONDS:
            self._suppressed += 1
            return
        log.warning(
            FAILED, model=model, outcome=outcome, error=problem[:300], suppressed=self._suppressed
        )
        self._last_warning = now
        self._suppressed = 0


def create_shadow(
    settings: ShadowSettings,
    codec: Codec,
    profiles: Mapping[str, Profile],
    registry: CollectorRegistry,
) -> ShadowMirror | None:
    """A mirror of every profiled model when a shadow is configured, else None.

    The `infersight_shadow_*` metrics are registered on `registry` only when mirroring.
    """
    if not settings.enabled:
        return None
    specs = {name: ComparisonSpec.of(p.prediction) for name, p in profiles.items()}
    return ShadowMirror(settings, codec, specs, ShadowMetrics(registry, specs))
