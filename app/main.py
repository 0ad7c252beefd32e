"""The composition root: `create_app(settings)` wires every part together, and nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import psutil
import structlog
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app import __version__
from app.api.admin import admin_router
from app.api.auth import authorized
from app.api.errors import error_body, error_response
from app.api.models import ModelRouter
from app.api.observation import Observers
from app.api.openapi import document_api
from app.api.proxy import (
    REQUEST_ID,
    InferenceRoutes,
    Proxy,
    ProxyLimits,
    RawResponse,
    passthrough,
    request_id_of,
)
from app.api.slow_bodies import SlowBodies
from app.config import Settings
from app.errors import AuthError, ConfigError, InferSightError, NotEnabled
from app.feedback.recorder import FeedbackRecorder
from app.feedback.store import open_store
from app.grpc import start_grpc
from app.lifecycle.feedback import FeedbackService, ModelQuality
from app.lifecycle.ml_test_score import (
    DeploymentView,
    MLTestScoreCollector,
    ModelView,
    evaluate,
)
from app.lifecycle.ml_test_score import report as ml_test_report
from app.lifecycle.parity import ParityProber
from app.lifecycle.shadow import create_shadow
from app.lifecycle.versions import MetadataPoller, VersionTracker
from app.monitoring.drift_scheduler import DriftScheduler, NullDriftScheduler
from app.monitoring.drift_types import DriftConfig
from app.monitoring.profile import OTHER_BIN, Profile, load_profile
from app.monitoring.quality import QualityWindow, quality_spec
from app.monitoring.serving_stats import ModelStats
from app.monitoring.validator import Validator
from app.monitoring.windows import ModelWindows
from app.protocols.codecs import CODECS
from app.telemetry.drift_metrics import DriftCollector
from app.telemetry.exposition import Exposition
from app.telemetry.lifecycle_metrics import (
    LifecycleMetrics,
    ModelFeedbackMetrics,
    QualityCollector,
)
from app.telemetry.logging import configure_logging, open_request_sink
from app.telemetry.metrics import Metrics, ServingStatsCollector, cgroup_memory_limit
from app.telemetry.parity_metrics import ParityMetrics
from app.telemetry.request_log import RequestLog
from app.upstream.breaker import BreakerState, CircuitBreaker
from app.upstream.client import UpstreamClient

log = structlog.get_logger("infersight")


def load_profiles(settings: Settings) -> dict[str, Profile]:
    """Load every configured profile, keyed by model name.

    Raises:
        ProfileError: a file is missing or invalid.
        ConfigError: two profiles claim the same model name.
    """
    profiles: dict[str, Profile] = {}
    for name, path in settings.profile_paths():
        profile = load_profile(path)
        key = name or profile.model.name
        if key in profiles:
            raise ConfigError(f"two profiles are configured for model '{key}'")
        profiles[key] = profile
    if settings.protocol == "mlflow" and len(profiles) > 1:
        raise ConfigError("the mlflow protocol serves one model: configure exactly one profile")
    return profiles


def ready_path(settings: Settings, models: list[str]) -> str:
    """The upstream path probed for readiness."""
    if settings.upstream.ready_path:
        return settings.upstream.ready_path
    if settings.protocol == "v2":
        return "/v2/health/ready"
    if settings.protocol == "v1":
        return f"/v1/models/{models[0]}" if models else "/"
    return "/ping"


@dataclass
class AppState:
    """Long-lived parts, reachable from route handlers as `request.app.state.infersight`."""

    settings: Settings
    registry: CollectorRegistry
    metrics: Metrics
    router: ModelRouter
    upstream: UpstreamClient
    request_log: RequestLog
    drift: DriftScheduler | NullDriftScheduler
    probe_path: str
    lifecycle: LifecycleMetrics
    feedback: FeedbackService | None = None
    upstream_ready: bool = False


async def _probe_loop(state: AppState) -> None:
    while True:
        state.upstream_ready = await state.upstream.probe(state.probe_path)
        state.metrics.upstream_up.set(1 if state.upstream_ready else 0)
        await asyncio.sleep(state.settings.upstream.probe_interval_seconds)


class InferSightApp(FastAPI):
    """FastAPI for everything but the hot path: inference calls skip the middleware stack and
    the router (about 100 µs per request), and every other response gets an `x-request-id`."""

    inference: InferenceRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.inference is not None and await self.inference(scope, receive, send):
            return
        await super().__call__(scope, receive, _with_request_id(scope, send))


def _with_request_id(scope: Scope, send: Send) -> Send:
    raw = next((v for k, v in scope["headers"] if k == REQUEST_ID.encode()), b"")
    request_id = request_id_of(raw.decode("latin-1")).encode("latin-1")

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == REQUEST_ID.encode() for k, _ in headers):
                headers.append((REQUEST_ID.encode(), request_id))
                message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _windows_factory(settings: Settings) -> Callable[[str, Validator, ModelStats], ModelWindows]:
    def make(name: str, validator: Validator, stats: ModelStats) -> ModelWindows:
        return ModelWindows(
            name,
            validator.checks,
            stats.prediction.check if stats.prediction else None,
            rows=settings.drift.window_rows,
            seconds=settings.drift.window_seconds,
        )

    return make


def _drift_scheduler(
    settings: Settings, router: ModelRouter, profiles: dict[str, Profile], metrics: Metrics
) -> DriftScheduler | NullDriftScheduler:
    windows = router.windows()
    if not settings.drift.enabled or not windows:
        return NullDriftScheduler()
    s = settings.drift
    return DriftScheduler(
        windows,
        {name: profiles[name] for name in windows},
        DriftConfig(alpha=s.alpha, correction=s.correction, min_rows=s.min_rows),
        interval_seconds=s.interval_seconds,
        timeout_seconds=s.cycle_timeout_seconds,
        on_cycle=metrics.drift_cycle_seconds.observe,
        on_error=metrics.drift_cycle_errors.inc,
    )


def _store_kind(url: str) -> str:
    """The store's kind without credentials: `sqlite` or `postgresql`."""
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


def _store_error(lifecycle: LifecycleMetrics, message: str) -> None:
    lifecycle.store_errors.inc()
    log.warning("feedback.store_error", error=message)


def _feedback(
    settings: Settings, profiles: dict[str, Profile], lifecycle: LifecycleMetrics
) -> FeedbackService | None:
    fb = settings.feedback
    predicted = {name: p for name, p in profiles.items() if p.prediction is not None}
    if not fb.enabled or not predicted:
        return None
    models: dict[str, ModelQuality] = {}
    for name, profile in predicted.items():
        assert profile.prediction is not None
        spec = quality_spec(
            profile.prediction, fb.task, fb.positive_class, fb.threshold, fb.calibration_bins
        )
        for metric, bound in fb.thresholds.items():
            lifecycle.threshold.labels(name, metric).set(bound)
        models[name] = ModelQuality(
            spec,
            QualityWindow(spec, fb.window_rows, fb.min_rows),
            ModelFeedbackMetrics(lifecycle, name, spec),
        )
    recorder = FeedbackRecorder(
        lambda: open_store(fb.store, fb.max_rows, fb.ttl_seconds),
        fb.queue_size,
        on_drop=lifecycle.store_dropped.inc,
        on_purge=lifecycle.on_purge,
        on_error=lambda msg: _store_error(lifecycle, msg),
    )
    return FeedbackService(fb, recorder, models, ModelFeedbackMetrics(lifecycle, OTHER_BIN, None))


def _breaker(settings: Settings, metrics: Metrics) -> CircuitBreaker | None:
    s = settings.upstream
    if not s.breaker_failures:
        return None

    def changed(state: BreakerState) -> None:
        metrics.upstream_circuit_open.set(0 if state is BreakerState.CLOSED else 1)
        log.warning("upstream.circuit", state=state.value, upstream=s.url)

    return CircuitBreaker(s.breaker_failures, s.breaker_open_seconds, on_change=changed)


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    profiles: dict[str, Profile] | None = None,
    request_stream: TextIO | None = None,
    configure_logs: bool = True,
    on_started: Callable[[], None] | None = None,
) -> InferSightApp:
    """Build the sidecar.

    Args:
        settings: configuration (default: from environment).
        registry: metrics registry (default: a fresh one; never the global registry).
        profiles: already-loaded profiles by model name (default: load `settings.profiles`).
        request_stream: write request lines here instead of the configured sink (tests).
        configure_logs: configure structlog/stdlib logging (off when the caller already has).
        on_started: called once the sidecar has started (`infersight serve` tunes the GC).
    """
    settings = settings or Settings()
    registry = registry or CollectorRegistry(auto_describe=True)
    if configure_logs:
        configure_logging(settings.logging)
    if profiles is None:
        profiles = load_profiles(settings)
    metrics = Metrics(registry)
    lifecycle = LifecycleMetrics(registry)
    max_age = settings.lifecycle.max_model_age_days * 86400
    for name in profiles:
        lifecycle.max_age.labels(name).set(max_age)
    router = ModelRouter(
        profiles,
        metrics,
        settings.protocol,
        lambda profile: Validator(
            profile,
            unknown_features=settings.validation.unknown_features,
            observe_only=settings.validation.observe_only,
            vectorize_min_rows=settings.validation.vectorize_min_rows,
        ),
        _windows_factory(settings) if settings.drift.enabled else None,
        lambda name, profile: VersionTracker(
            name,
            profile.model.version,
            profile.content_hash(),
            metrics,
            lifecycle,
            settings.lifecycle.model_version,
        ),
    )
    registry.register(ServingStatsCollector(router.stats()))
    feedback = _feedback(settings, profiles, lifecycle)
    if feedback is not None:
        registry.register(QualityCollector(feedback.windows))
    breaker = _breaker(settings, metrics)
    poller = MetadataPoller(
        settings.protocol,
        upstream := UpstreamClient(settings.upstream, metrics.upstream_retries.inc, breaker),
        router.versions(),
        lifecycle,
        settings.lifecycle.metadata_interval_seconds,
    )
    drift = _drift_scheduler(settings, router, profiles, metrics)
    registry.register(DriftCollector(lambda: drift.latest, router.windows()))
    limit = settings.metrics.memory_limit_bytes or cgroup_memory_limit()
    if limit:
        metrics.memory_limit.set(limit)
    shadow = create_shadow(settings.shadow, CODECS[settings.protocol], profiles, registry)
    parity = (
        ParityProber(
            profiles,
            settings.parity,
            settings.protocol,
            CODECS[settings.protocol],
            upstream,
            ParityMetrics(registry),
        )
        if settings.parity.enabled
        else None
    )
    request_log = RequestLog(
        settings.logging,
        on_drop=metrics.log_records_dropped.inc,
        sink=open_request_sink(settings.logging.sink, request_stream) if request_stream else None,
    )
    state = AppState(
        settings=settings,
        registry=registry,
        metrics=metrics,
        router=router,
        upstream=upstream,
        request_log=request_log,
        drift=drift,
        probe_path=ready_path(settings, list(profiles)),
        lifecycle=lifecycle,
        feedback=feedback,
    )
    proxy = Proxy(
        CODECS[settings.protocol],
        router,
        upstream,
        request_log,
        ProxyLimits(
            settings.validation.max_body_bytes,
            settings.validation.max_rows,
            slow_bodies := SlowBodies(settings.validation.body_timeout_seconds),
        ),
        Observers(
            recorder=feedback.recorder if feedback else None,
            feedback_models=frozenset(feedback.models) if feedback else frozenset(),
            key_field=settings.feedback.key_field,
            version_header=(settings.lifecycle.version_header or "").lower() or None,
            shadow=shadow,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await upstream.start()
        if feedback is not None:
            await feedback.recorder.start()
        request_log.start()
        slow_bodies.start()
        drift.start()
        if shadow is not None:
            await shadow.start()
        grpc_server = await start_grpc(settings, router, metrics, request_log, proxy.observers)
        tasks = [
            asyncio.create_task(_probe_loop(state)),
            asyncio.create_task(poller.run_forever()),
        ]
        if parity is not None:
            tasks.append(asyncio.create_task(parity.run_forever()))
        log.info(
            "sidecar.started",
            version=__version__,
            protocol=settings.protocol,
            upstream=settings.upstream.url,
            models=list(profiles),
        )
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            if grpc_server is not None:  # first: calls in flight still reach the log and store
                await grpc_server.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await drift.stop()
            await slow_bodies.stop()
            if shadow is not None:
                await shadow.stop()
            if feedback is not None:
                await feedback.recorder.stop()
            await upstream.close()
            request_log.stop()
            log.info("sidecar.stopped", written=request_log.written, dropped=request_log.dropped)

    process = psutil.Process()

    def deployment_view() -> DeploymentView:
        latest = drift.latest
        windows = feedback.windows() if feedback is not None else {}
        parity_report = parity.report() if parity is not None else {}
        return DeploymentView(
            models=[
                ModelView(
                    name=m.name,
                    profile=m.profile,
                    stats=m.stats,
                    versions=m.versions,
                    drift=latest.get(m.name),
                    quality=windows.get(m.name),
                    parity=parity_report.get(m.name),
                )
                for m in router.models.values()
                if m.profile is not None
            ],
            server=poller.server,
            max_age_seconds=settings.lifecycle.max_model_age_days * 86400,
            drift_enabled=settings.drift.enabled,
            feedback_enabled=feedback is not None,
            quality_thresholds=settings.feedback.thresholds,
            parity_enabled=parity is not None,
            shadow_enabled=settings.shadow.enabled,
            rss_bytes=float(process.memory_info().rss),
            memory_limit_bytes=float(limit) if limit else None,
        )

    registry.register(MLTestScoreCollector(deployment_view))
    exposition = Exposition(registry)

    app = InferSightApp(
        title="InferSight",
        version=__version__,
        description="Monitoring sidecar for ML model servers.",
        lifespan=lifespan,
    )
    app.state.infersight = state

    @app.exception_handler(InferSightError)
    async def _infersight_error(_: Request, exc: InferSightError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("request.unexpected_error", error=repr(exc)[:300])
        return Response(
            error_body("internal_error", "unexpected error in the sidecar"),
            status_code=500,
            media_type="application/json",
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The sidecar process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz() -> JSONResponse:
        """Ready: profiles loaded and the model server answers its readiness probe."""
        ok = await upstream.probe(state.probe_path)
        state.upstream_ready = ok
        metrics.upstream_up.set(1 if ok else 0)
        body = {
            "status": "ready" if ok else "not_ready",
            "upstream": "up" if ok else "down",
            "circuit": breaker.state.value if breaker is not None else None,
            "models": list(profiles),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/monitoring/drift", tags=["monitoring"])
    async def drift_report() -> dict[str, Any]:
        """The latest drift report: per model and feature, each test's statistic, p-value,
        effect, threshold and verdict, with window and reference sizes."""
        latest = drift.latest
        return {
            "enabled": settings.drift.enabled,
            "interval_seconds": settings.drift.interval_seconds,
            "cycles": drift.cycles,
            "errors": drift.errors,
            "models": {name: report.as_dict() for name, report in latest.items()},
            "windows": {
                name: {
                    "bytes": w.nbytes,
                    "rows": {f.name: f.missing.size for f in w.features},
                }
                for name, w in router.windows().items()
            },
        }

    @app.get("/monitoring/ml-test-score", tags=["monitoring"])
    async def ml_test_score() -> dict[str, Any]:
        """ML Test Score Monitors 1-7: automated here (configured and receiving data), their
        state and evidence, and the Monitoring section's score without Prometheus's view."""
        return ml_test_report(evaluate(deployment_view()))

    @app.get("/monitoring/lifecycle", tags=["monitoring"])
    async def lifecycle_report() -> dict[str, Any]:
        """Served versions (and the profile's), the model server's software, the latest parity
        probe per model, and whether feedback and a shadow are on."""
        return {
            "versions": {name: t.as_dict() for name, t in router.versions().items()},
            "server": (
                {"name": poller.server[0], "version": poller.server[1]} if poller.server else None
            ),
            "parity": parity.report() if parity is not None else {},
            "feedback": {
                "enabled": feedback is not None,
                "store": _store_kind(settings.feedback.store),
                "labelled": {n: len(w) for n, w in feedback.windows().items()} if feedback else {},
            },
            "shadow": {"enabled": settings.shadow.enabled},
        }

    @app.post("/feedback", tags=["feedback"], response_model=None)
    async def feedback_route(request: Request) -> Response:
        """Ground truth for earlier predictions: `{"feedback": [{"request_id", "row", "label"}]}`
        (or `key` instead of request_id/row). Answers the count of each outcome (matched,
        unknown, duplicate, expired, invalid) and a detail line for every label not matched."""
        if not authorized(request, settings.auth.feedback_token):
            return error_response(AuthError("a valid bearer token is required for /feedback"))
        if feedback is None:
            raise NotEnabled(
                "feedback is off: it needs feedback.enabled and a profile with a prediction section"
            )
        body = await request.body()
        return JSONResponse(await feedback.handle(body))

    @app.get("/metrics", tags=["monitoring"], response_model=None)
    async def metrics_route(request: Request) -> Response:
        """Prometheus exposition."""
        if not authorized(request, settings.auth.metrics_token):
            return error_response(AuthError("a valid bearer token is required for /metrics"))
        return Response(await exposition.render_off_loop(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(
        admin_router(
            settings,
            drift.run_cycle,
            lambda: {"cycles": drift.cycles, "errors": drift.errors},
            breaker,
        )
    )
    app.inference = InferenceRoutes(settings.protocol, proxy)
    document_api(app, settings.protocol)  # the fast path's routes, in the OpenAPI document

    string_errors = proxy.codec.string_errors

    async def forward_other(request: Request) -> Response | RawResponse:
        return await passthrough(request, upstream, string_error=string_errors)

    app.router.routes.append(
        Route(
            "/{path:path}",
            forward_other,
            methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
            include_in_schema=False,
        )
    )
    return app
