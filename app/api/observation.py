"""What every transport (HTTP, gRPC) does with a served inference call once it is decoded:
the rejection reason, prediction statistics, version tracking, feedback, and the log record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from multidict import CIMultiDict

from app.api.models import MonitoredModel
from app.errors import PayloadTooLarge, RequestError, ValidationFailed
from app.feedback.recorder import FeedbackRecorder
from app.lifecycle.shadow import MirroredCall
from app.monitoring.batch import Batch, Predictions
from app.monitoring.validator import BatchReport
from app.telemetry.request_log import RequestLog


class Mirror(Protocol):
    """Where successful requests may be mirrored (a shadow model)."""

    def offer(
        self,
        model: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes,
        primary: Predictions,
    ) -> None: ...

    def offer_call(self, model: str, call: MirroredCall, primary: Predictions) -> None: ...


@dataclass(slots=True)
class Observers:
    """Optional consumers of each answered request, beyond metrics, windows and logs."""

    recorder: FeedbackRecorder | None = None
    """Keeps predictions for ground-truth feedback."""
    feedback_models: frozenset[str] = frozenset()
    """Models whose predictions are kept (those with a prediction profile)."""
    key_field: str | None = None
    """Input field whose values are the rows' business keys for feedback."""
    shadow: Mirror | None = None
    version_header: str | None = None
    """Response header carrying the served model version."""


def observe_predictions(model: MonitoredModel, predictions: Predictions) -> None:
    """Prediction statistics, the prediction window and the non-finite count of one answer
    (any transport)."""
    pred = model.stats.prediction if model.stats is not None else None
    if pred is None:
        return
    result = pred.observe(predictions.values)
    if model.windows is not None:
        model.windows.observe_predictions(result)
    bad = len(result.violations.get("non_finite", ()))
    if bad:
        model.metrics.non_finite.inc(bad)


def keep_answer(
    model: MonitoredModel,
    observers: Observers,
    request_id: str,
    batch: Batch | None,
    predictions: Predictions,
) -> None:
    """Note the served version and keep the predictions for feedback (any transport)."""
    versions = model.versions
    if versions is not None:
        seen = predictions.model_version
        if seen is not None and (seen != versions.current or not versions.observed):
            versions.seen(seen)
    if observers.recorder is not None and model.name in observers.feedback_models:
        key_field = observers.key_field
        keys = batch.columns.get(key_field) if key_field and batch else None
        observers.recorder.submit(
            model.name,
            request_id,
            predictions.values,
            keys,
            versions.current if versions else None,
        )


def violation_summary(report: BatchReport) -> str:
    """The message of an enforced violation: count, rows, and the first's row, feature and
    kind."""
    enforced = [v for v in report.details if v.policy == "enforce"]
    rows = {v.row for v in enforced}
    first = enforced[0]
    where = f"row {first.row}" if first.row is not None else "all rows"
    return (
        f"{len(enforced)} enforced violation(s) in {len(rows)} row(s); first: {where}, "
        f"feature '{first.feature}': {first.kind}"
    )


def rejection_reason(exc: RequestError) -> str:
    """The `reason` label of a refused request: enforce, too_large or decode."""
    if isinstance(exc, ValidationFailed):
        return "enforce"
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    return "decode"


def request_record(
    request_log: RequestLog,
    model: MonitoredModel,
    *,
    request_id: str,
    trace_id: str | None,
    version: str | None,
    protocol: str,
    status: int,
    elapsed: float,
    upstream_ms: float | None,
    batch: Batch | None,
    report: BatchReport | None,
    rejected: str | None,
    error: str | None,
    predictions: Predictions | None,
    grpc_status: str | None = None,
) -> dict[str, Any]:
    """One request-log record (the payload itself only when the log wants it; `grpc_status`
    only for gRPC calls)."""
    payload = request_log.enabled and request_log.wants_payload()
    record: dict[str, Any] = {
        "time": time.time(),
        "request_id": request_id,
        "trace_id": trace_id,
        "model": model.name,
        "model_version": (predictions.model_version if predictions else None)
        or version
        or (model.versions.current if model.versions else None),
        "protocol": protocol,
        "status": status,
        "n_rows": batch.n_rows if batch is not None else None,
        "latency_ms": round(elapsed * 1000, 3),
        "upstream_ms": upstream_ms,
        "violations": report.counts_by_kind() if report and report.n_violations else {},
        "rejected": rejected,
        "error": error,
        "prediction_values": predictions.values if predictions else None,
        "payload": payload,
        "batch": batch if payload else None,
    }
    if grpc_status is not None:
        record["grpc_status"] = grpc_status
    return record
