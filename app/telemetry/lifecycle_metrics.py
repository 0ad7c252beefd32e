"""Metrics of the model lifecycle: ground-truth feedback and quality, versions, staleness.

Fleet-wide quality is computed in PromQL from counters (every replica adds what it matched):
accuracy from `infersight_feedback_confusion_total`, log-loss and Brier from their sums over
`infersight_feedback_scored_total`, MAE/RMSE/bias from the error sums. `infersight_model_quality`
is this replica's sliding window, a diagnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.feedback.store import OUTCOMES, PurgeResult
from app.monitoring.quality import (
    OTHER_CLASS,
    QualitySpec,
    QualityWindow,
    Scored,
    calibration_bin,
    calibration_bin_labels,
)


class LifecycleMetrics:
    """Feedback, quality, version and staleness metrics on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.feedback = Counter(
            "infersight_feedback", "Feedback labels received, by outcome.",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.scored = Counter(
            "infersight_feedback_scored", "Matched labels scored against their prediction.",
            ["model"], registry=r,
        )  # fmt: skip
        self.correct = Counter(
            "infersight_feedback_correct",
            "Scored labels whose predicted class was right (classification).",
            ["model"], registry=r,
        )  # fmt: skip
        self.threshold = Gauge(
            "infersight_model_quality_threshold",
            "Configured alert bound of a fleet-wide quality metric (feedback.thresholds).",
            ["model", "metric"], registry=r,
        )  # fmt: skip
        self.confusion = Counter(
            "infersight_feedback_confusion",
            "Scored labels by true and predicted class (classes from the profile; the probability "
            "task uses 1 = positive, 0 = negative).",
            ["model", "actual", "predicted"], registry=r,
        )  # fmt: skip
        self.log_loss = Counter(
            "infersight_feedback_log_loss", "Sum of per-row log-loss (probability outputs).",
            ["model"], registry=r,
        )  # fmt: skip
        self.brier = Counter(
            "infersight_feedback_brier", "Sum of per-row squared probability error.",
            ["model"], registry=r,
        )  # fmt: skip
        self.calibration_rows = Counter(
            "infersight_feedback_calibration_rows", "Scored probabilities per reliability bin.",
            ["model", "bin"], registry=r,
        )  # fmt: skip
        self.calibration_positives = Counter(
            "infersight_feedback_calibration_positives",
            "Scored probabilities per reliability bin whose label was positive.",
            ["model", "bin"], registry=r,
        )  # fmt: skip
        self.calibration_predicted = Counter(
            "infersight_feedback_calibration_predicted",
            "Sum of the predicted probabilities per reliability bin.",
            ["model", "bin"], registry=r,
        )  # fmt: skip
        self.overestimate = Counter(
            "infersight_feedback_overestimate", "Sum of (prediction - label) where positive.",
            ["model"], registry=r,
        )  # fmt: skip
        self.underestimate = Counter(
            "infersight_feedback_underestimate", "Sum of (label - prediction) where positive.",
            ["model"], registry=r,
        )  # fmt: skip
        self.squared_error = Counter(
            "infersight_feedback_squared_error", "Sum of (prediction - label)².",
            ["model"], registry=r,
        )  # fmt: skip
        self.store_dropped = Counter(
            "infersight_feedback_store_dropped",
            "Predicted rows not stored for feedback (queue full or store error).", registry=r,
        )  # fmt: skip
        self.store_expired = Counter(
            "infersight_feedback_store_expired",
            "Stored predictions that passed the TTL without a label.", registry=r,
        )  # fmt: skip
        self.store_evicted = Counter(
            "infersight_feedback_store_evicted",
            "Stored predictions evicted to stay under the row cap.", registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            "infersight_feedback_store_errors", "Failed calls to the prediction store.",
            registry=r,
        )  # fmt: skip
        self.version_changes = Counter(
            "infersight_model_version_changes", "Changes of the served model version seen.",
            ["model"], registry=r,
        )  # fmt: skip
        self.profile_mismatch = Gauge(
            "infersight_profile_mismatch",
            "1 when the served model version differs from the profile's model version.",
            ["model"], registry=r,
        )  # fmt: skip
        self.max_age = Gauge(
            "infersight_model_max_age_seconds",
            "Configured maximum model age (InferSightModelStale).", ["model"], registry=r,
        )  # fmt: skip
        self.upstream_info = Gauge(
            "infersight_upstream_info",
            "The model server software and version, as its metadata reports it (always 1).",
            ["server", "version"], registry=r,
        )  # fmt: skip
        self.upstream_changes = Counter(
            "infersight_upstream_version_changes",
            "Changes of the model server's reported software version.", registry=r,
        )  # fmt: skip

    def on_purge(self, result: PurgeResult) -> None:
        """Count a store purge."""
        self.store_expired.inc(result.expired)
        self.store_evicted.inc(result.evicted)


class ModelFeedbackMetrics:
    """Pre-bound feedback children of one model (series exist at 0 from the start)."""

    def __init__(self, m: LifecycleMetrics, model: str, spec: QualitySpec | None) -> None:
        self.spec = spec
        self.outcomes = {o: m.feedback.labels(model, o) for o in OUTCOMES}
        self.scored = m.scored.labels(model)
        self.confusion: dict[tuple[str, str], Counter] = {}
        self.classes: frozenset[str | float] = frozenset()
        """Classes with their own confusion label (others count as `__other__`)."""
        if spec is None:
            return
        if spec.task != "regression":
            self.correct = m.correct.labels(model)
            classes = [*spec.classes, OTHER_CLASS] if spec.task == "classes" else ["1", "0"]
            self.confusion = {
                (a, p): m.confusion.labels(model, a, p) for a in classes for p in classes
            }
            self.classes = frozenset(classes)
        if spec.task == "probability":
            self.log_loss = m.log_loss.labels(model)
            self.brier = m.brier.labels(model)
            labels = calibration_bin_labels(spec.calibration_bins)
            self.cal_rows = [m.calibration_rows.labels(model, b) for b in labels]
            self.cal_pos = [m.calibration_positives.labels(model, b) for b in labels]
            self.cal_pred = [m.calibration_predicted.labels(model, b) for b in labels]
        if spec.task == "regression":
            self.over = m.overestimate.labels(model)
            self.under = m.underestimate.labels(model)
            self.squared = m.squared_error.labels(model)

    def count(self, s: Scored) -> None:
        """Add one scored label to the counters."""
        spec = self.spec
        assert spec is not None
        self.scored.inc()
        if spec.task == "regression":
            err = float(s.predicted) - float(s.actual)
            (self.over if err > 0 else self.under).inc(abs(err))
            self.squared.inc(err * err)
            return
        if s.actual == s.predicted:
            self.correct.inc()
        known = self.classes
        actual = str(s.actual) if s.actual in known else OTHER_CLASS
        predicted = str(s.predicted) if s.predicted in known else OTHER_CLASS
        self.confusion[(actual, predicted)].inc()
        if spec.task == "probability":
            p, y = s.score, 1.0 if s.actual == "1" else 0.0
            clipped = min(max(p, 1e-15), 1 - 1e-15)
            self.log_loss.inc(-(y * math.log(clipped) + (1 - y) * math.log(1 - clipped)))
            self.brier.inc((p - y) ** 2)
            b = calibration_bin(p, spec.calibration_bins)
            self.cal_rows[b].inc()
            self.cal_pred[b].inc(p)
            if y:
                self.cal_pos[b].inc()


class QualityCollector(Collector):
    """`infersight_model_quality{model, metric}` from each model's window, at scrape time."""

    def __init__(self, windows: Callable[[], Mapping[str, QualityWindow]]) -> None:
        self.windows = windows

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        quality = GaugeMetricFamily(
            "infersight_model_quality",
            "Prediction quality over the sliding window of labelled predictions (this replica).",
            labels=["model", "metric"],
        )
        rows = GaugeMetricFamily(
            "infersight_model_quality_window_rows",
            "Labelled predictions in the quality window.", labels=["model"],
        )  # fmt: skip
        for model, window in self.windows().items():
            rows.add_metric([model], len(window))
            for metric, value in window.metrics().items():
                quality.add_metric([model, metric], value)
        yield quality
        yield rows
