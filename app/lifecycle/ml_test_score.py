"""The monitoring tests of Google's ML Test Score (Breck et al., 2017), evaluated live.

For each of Monitors 1-7 the sidecar says whether this deployment automates it (configured and
receiving data) and its current state. The paper gives a test 0.5 points when it is run by hand
and documented, 1 point when it is automated and repeated; a monitor that runs here but whose
alert Prometheus has not loaded notifies nobody, so `infersight ml-test-score --prometheus`
gives it 0.5 and 1 only with its alert rules loaded. The paper's final score is the minimum over
its four sections; this is the Monitoring section's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.lifecycle.versions import VersionTracker
from app.monitoring.drift_types import ModelDriftReport
from app.monitoring.profile import Profile
from app.monitoring.quality import QualityWindow
from app.monitoring.serving_stats import ModelStats

State = Literal["ok", "alerting", "no_data"]
CHANGE_WINDOW_SECONDS = 3600.0
"""A version change keeps Monitor 1 alerting this long (as InferSightModelVersionChanged)."""


@dataclass(frozen=True, slots=True)
class MonitorSpec:
    id: int
    test: str
    alerts: tuple[str, ...]
    """The alert rules that notify for this monitor."""


MONITORS: tuple[MonitorSpec, ...] = (
    MonitorSpec(1, "Dependency changes result in notification", ("InferSightModelVersionChanged",)),
    MonitorSpec(
        2,
        "Data invariants hold in training and serving inputs",
        (
            "InferSightFeatureDrift",
            "InferSightMissingValuesSpike",
            "InferSightUnseenCategories",
            "InferSightValidationRejections",
        ),
    ),
    MonitorSpec(
        3, "Training and serving features compute the same values", ("InferSightParityMismatch",)
    ),
    MonitorSpec(4, "Models are not too stale", ("InferSightModelStale",)),
    MonitorSpec(5, "The model is numerically stable", ("InferSightNonFinitePredictions",)),
    MonitorSpec(
        6,
        "The model has not regressed in serving latency, throughput or RAM usage",
        ("InferSightHighLatency", "InferSightHighErrorRate", "InferSightMemoryGrowth"),
    ),
    MonitorSpec(
        7,
        "The model has not regressed in prediction quality on served data",
        ("InferSightQualityDrop",),
    ),
)


@dataclass
class ModelView:
    """What the sidecar knows about one profiled model right now."""

    name: str
    profile: Profile
    stats: ModelStats | None
    versions: VersionTracker | None
    drift: ModelDriftReport | None = None
    quality: QualityWindow | None = None
    parity: dict[str, Any] | None = None
    """The latest parity probe (`outcome`, `max_abs_difference`, …), None before the first."""


@dataclass
class DeploymentView:
    """The inputs of the evaluation, gathered by the app at request or scrape time."""

    models: Sequence[ModelView]
    server: tuple[str, str] | None = None
    max_age_seconds: float = 30 * 86400
    drift_enabled: bool = True
    feedback_enabled: bool = False
    quality_thresholds: dict[str, float] = field(default_factory=dict)
    parity_enabled: bool = False
    shadow_enabled: bool = False
    rss_bytes: float | None = None
    memory_limit_bytes: float | None = None
    now: float = field(default_factory=time.time)


@dataclass
class MonitorResult:
    spec: MonitorSpec
    configured: bool
    receiving_data: bool
    state: State
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def automated(self) -> bool:
        return self.configured and self.receiving_data

    def as_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.spec.id,
            "test": self.spec.test,
            "automated": self.automated,
            "configured": self.configured,
            "receiving_data": self.receiving_data,
            "state": self.state,
            "detail": self.detail,
            "alerts": list(self.spec.alerts),
            "evidence": self.evidence,
        }


def _rows_seen(m: ModelView) -> int:
    if m.stats is None or not m.stats.checks:
        return 0
    return sum(m.stats.bin_counts[m.stats.checks[0].name])


def _predictions_seen(m: ModelView) -> int:
    if m.stats is None or m.stats.prediction is None:
        return 0
    return sum(m.stats.prediction.bin_counts)


def _dependency(view: DeploymentView) -> MonitorResult:
    observed = {m.name: m.versions.as_dict() for m in view.models if m.versions is not None}
    receiving = any(v["observed"] for v in observed.values()) or view.server is not None
    recent = [
        n
        for n, v in observed.items()
        if v["changed_at"] is not None and view.now - v["changed_at"] < CHANGE_WINDOW_SECONDS
    ]
    mismatch = [n for n, v in observed.items() if v["profile_mismatch"]]
    state: State = "no_data" if not receiving else "alerting" if recent or mismatch else "ok"
    detail = (
        f"version changed in the last hour: {recent}; profile built for another version: {mismatch}"
        if state == "alerting"
        else "served versions followed from responses and metadata"
        if receiving
        else "no version reported yet by the model server (set lifecycle.model_version or "
        "lifecycle.version_header for V1/MLflow)"
    )
    evidence: dict[str, Any] = {"models": observed}
    if view.server is not None:
        evidence["server"] = {"name": view.server[0], "version": view.server[1]}
    return MonitorResult(MONITORS[0], True, receiving, state, detail, evidence)


def _invariants(view: DeploymentView) -> MonitorResult:
    rows = {m.name: _rows_seen(m) for m in view.models}
    drifted = {
        m.name: [f.feature for f in m.drift.features if f.drift]
        for m in view.models
        if m.drift is not None
    }
    violations = {
        m.name: sum(m.stats.violations.values()) for m in view.models if m.stats is not None
    }
    receiving = bool(view.models) and all(rows.values())
    any_drift = any(drifted.values())
    state: State = "no_data" if not receiving else "alerting" if any_drift else "ok"
    detail = (
        f"drift in {', '.join(f'{m}: {fs}' for m, fs in drifted.items() if fs)}"
        if any_drift
        else "inputs validated against the profile"
        + ("; drift windows tested every cycle" if view.drift_enabled else "; drift tests off")
    )
    return MonitorResult(
        MONITORS[1],
        bool(view.models),
        receiving,
        state,
        detail,
        {"rows": rows, "violations": violations, "drifted_features": drifted},
    )


def _parity(view: DeploymentView) -> MonitorResult:
    golden = [m for m in view.models if m.profile.golden is not None]
    configured = view.parity_enabled and bool(golden)
    probed = {m.name: m.parity for m in golden if m.parity is not None}
    receiving = configured and len(probed) == len(golden)
    bad = [n for n, p in probed.items() if p.get("outcome") != "ok"]
    state: State = "no_data" if not receiving else "alerting" if bad else "ok"
    detail = (
        "no golden rows in the profile (profile build --golden-rows N)"
        if not golden
        else "parity probes are off (parity.enabled)"
        if not view.parity_enabled
        else f"parity probe failed for {bad}"
        if bad
        else "golden rows replayed; the model answers as in training"
        if receiving
        else "waiting for the first parity probe"
    )
    return MonitorResult(MONITORS[2], configured, receiving, state, detail, {"probes": probed})


def _staleness(view: DeploymentView) -> MonitorResult:
    ages = {
        m.name: view.now - m.profile.model.trained_at.timestamp()
        for m in view.models
        if m.profile.model.trained_at is not None
    }
    configured = bool(view.models) and len(ages) == len(view.models)
    stale = [n for n, age in ages.items() if age > view.max_age_seconds]
    state: State = "no_data" if not configured else "alerting" if stale else "ok"
    detail = (
        "the profile has no model.trained_at (profile build --trained-at)"
        if not configured
        else f"older than {view.max_age_seconds / 86400:g} days: {stale}"
        if stale
        else f"every model is younger than {view.max_age_seconds / 86400:g} days"
    )
    return MonitorResult(
        MONITORS[3],
        configured,
        configured,
        state,
        detail,
        {"age_days": {n: round(a / 86400, 2) for n, a in ages.items()}},
    )


def _stability(view: DeploymentView) -> MonitorResult:
    with_output = [m for m in view.models if m.stats is not None and m.stats.prediction]
    seen = {m.name: _predictions_seen(m) for m in with_output}
    bad = {
        m.name: m.stats.prediction.non_finite
        for m in with_output
        if m.stats is not None and m.stats.prediction is not None
    }
    receiving = bool(with_output) and all(seen.values())
    alerting = any(bad.values())
    state: State = "alerting" if alerting else "ok" if receiving else "no_data"
    detail = (
        f"NaN/Inf predictions: {bad}"
        if alerting
        else "every prediction checked for NaN/Inf"
        if receiving
        else "no prediction section in the profile"
        if not with_output
        else "no predictions seen yet"
    )
    return MonitorResult(
        MONITORS[4],
        bool(with_output),
        receiving,
        state,
        detail,
        {"predictions": seen, "non_finite": bad},
    )


def _performance(view: DeploymentView) -> MonitorResult:
    rows = sum(_rows_seen(m) for m in view.models)
    limit, rss = view.memory_limit_bytes, view.rss_bytes
    near_limit = bool(limit and rss and rss > 0.9 * limit)
    state: State = "no_data" if not rows else "alerting" if near_limit else "ok"
    detail = (
        "RSS above 90 % of the memory limit"
        if near_limit
        else "latency, errors, CPU and RSS exported for every request"
        if rows
        else "no requests yet"
    )
    return MonitorResult(
        MONITORS[5],
        True,
        rows > 0,
        state,
        detail,
        {"rows": rows, "rss_bytes": rss, "memory_limit_bytes": limit},
    )


def _quality(view: DeploymentView) -> MonitorResult:
    windows = {m.name: m.quality for m in view.models if m.quality is not None}
    measured = view.feedback_enabled and bool(windows)
    configured = measured and bool(view.quality_thresholds)
    labelled = {n: len(w) for n, w in windows.items()}
    current = {n: w.metrics() for n, w in windows.items()}
    receiving = measured and any(labelled.values())
    state: State = "ok" if receiving else "no_data"
    if receiving and configured:
        state = "alerting" if _below_thresholds(current, view.quality_thresholds) else "ok"
    detail = (
        "feedback is off or no profile has a prediction section"
        if not measured
        else "quality is measured but no feedback.thresholds are set: nothing alerts"
        if not configured
        else f"quality from ground-truth feedback, alert bounds {view.quality_thresholds}"
        if receiving
        else "no feedback labels yet (POST /feedback)"
    )
    evidence: dict[str, Any] = {"labelled": labelled, "metrics": current}
    evidence["shadow"] = view.shadow_enabled
    return MonitorResult(MONITORS[6], configured, receiving, state, detail, evidence)


LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "ece"})


def _below_thresholds(current: dict[str, dict[str, float]], thresholds: dict[str, float]) -> bool:
    for metrics in current.values():
        for name, bound in thresholds.items():
            value = metrics.get(name)
            if value is None or value != value:
                continue
            if (value > bound) if name in LOWER_IS_BETTER else (value < bound):
                return True
    return False


def evaluate(view: DeploymentView) -> list[MonitorResult]:
    """Monitors 1-7 for this deployment."""
    return [
        _dependency(view),
        _invariants(view),
        _parity(view),
        _staleness(view),
        _stability(view),
        _performance(view),
        _quality(view),
    ]


def score(results: Sequence[MonitorResult], loaded_alerts: set[str] | None = None) -> float:
    """The Monitoring section's score: 1 per automated monitor; with `loaded_alerts` (from
    Prometheus), 1 only when its alerts are loaded too, else 0.5."""
    total = 0.0
    for r in results:
        if not r.automated:
            continue
        if loaded_alerts is None or set(r.spec.alerts) <= loaded_alerts:
            total += 1.0
        else:
            total += 0.5
    return total


def report(results: Sequence[MonitorResult]) -> dict[str, Any]:
    """The JSON document of `GET /monitoring/ml-test-score`."""
    return {
        "monitors": [r.as_dict() for r in results],
        "automated": sum(1 for r in results if r.automated),
        "score": score(results),
        "max_score": len(results),
        "note": (
            "1 point per automated monitor; `infersight ml-test-score --prometheus URL` also "
            "checks that each monitor's alert rules are loaded (0.5 without them)"
        ),
    }


class MLTestScoreCollector(Collector):
    """`infersight_ml_test_monitor_automated{monitor, test}` and
    `infersight_ml_test_monitor_ok{monitor, test}` (1 ok, 0 alerting, absent without data)."""

    def __init__(self, view: Any) -> None:
        self.view = view
        """A callable returning the current DeploymentView."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        automated = GaugeMetricFamily(
            "infersight_ml_test_monitor_automated",
            "1 when the ML Test Score monitor is automated here (configured and receiving data).",
            labels=["monitor", "test"],
        )
        ok = GaugeMetricFamily(
            "infersight_ml_test_monitor_ok",
            "1 when the monitor's current state is ok, 0 when alerting (absent without data).",
            labels=["monitor", "test"],
        )
        for r in evaluate(self.view()):
            labels = [str(r.spec.id), r.spec.test]
            automated.add_metric(labels, 1.0 if r.automated else 0.0)
            if r.state != "no_data":
                ok.add_metric(labels, 1.0 if r.state == "ok" else 0.0)
        yield automated
        yield ok
