"""Every InferSight metric, defined in one place on an injected registry.

Label values come only from the profiles (model, feature, bin, class names), from fixed sets
(protocol, status class, reason, outcome, kind), or are folded into `__other__`: the number of
series is fixed by the profiles whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from app.monitoring.profile import OTHER_BIN
from app.monitoring.serving_stats import ModelStats
from app.telemetry.exposition import FixedLabels, fixed_sample
from app.telemetry.hot_metrics import HotCounterFamily, HotHistogramFamily, cumulative_buckets

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
REJECT_REASONS = ("decode", "enforce", "too_large")
STAGES = ("check", "observe")
"""Where monitoring can fail: checking the request, observing the answer."""
UPSTREAM_OUTCOMES = (
    "ok", "error_status", "unavailable", "timeout", "bad_response", "circuit_open",
)  # fmt: skip


def status_class(status: int) -> str:
    """'2xx', '4xx', … for an HTTP status (bounded label values)."""
    return f"{min(max(status // 100, 1), 5)}xx"


class Metrics:
    """The service-level metrics (request counts, latencies, health) on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # model: a profile name or "__other__"; protocol: v2|v1|mlflow|v2-grpc; status: a class.
        # Updated on every request: lock-free children read at scrape time (hot_metrics).
        self.requests = HotCounterFamily(
            "infersight_requests", "Requests answered, by status class.",
            ["model", "protocol", "status"], r,
        )  # fmt: skip
        self.rejected_requests = HotCounterFamily(
            "infersight_rejected_requests", "Requests answered by the sidecar and not forwarded.",
            ["model", "reason"], r,
        )  # fmt: skip
        self.request_duration = HotHistogramFamily(
            "infersight_request_duration_seconds", "Time from request to response in the sidecar.",
            ["model", "protocol"], r, LATENCY_BUCKETS,
        )  # fmt: skip
        self.upstream_duration = HotHistogramFamily(
            "infersight_upstream_duration_seconds", "Time spent waiting for the model server.",
            ["model", "outcome"], r, LATENCY_BUCKETS,
        )  # fmt: skip
        self.rows = HotCounterFamily("infersight_rows", "Rows decoded from requests.", ["model"], r)
        self.rejected_rows = HotCounterFamily(
            "infersight_rejected_rows", "Rows of requests rejected by the sidecar.", ["model"], r
        )
        self.monitoring_errors = HotCounterFamily(
            "infersight_monitoring_errors",
            "Requests whose monitoring failed on a sidecar bug (check: before forwarding, the "
            "request was forwarded unchecked; observe: after the answer).",
            ["model", "stage"], r,
        )  # fmt: skip
        self.prediction_non_finite = Counter(
            "infersight_prediction_non_finite", "NaN or infinite predictions.", ["model"],
            registry=r,
        )  # fmt: skip
        self.upstream_retries = Counter(
            "infersight_upstream_retries",
            "Requests sent again: the connection broke before any answer, or none could be opened.",
            registry=r,
        )  # fmt: skip
        self.upstream_circuit_open = Gauge(
            "infersight_upstream_circuit_open",
            "1 while the circuit breaker fails requests fast (open or half-open), else 0.",
            registry=r,
        )  # fmt: skip
        self.upstream_up = Gauge(
            "infersight_upstream_up", "1 when the model server answered its readiness probe.",
            registry=r,
        )  # fmt: skip
        self.memory_limit = Gauge(
            "infersight_memory_limit_bytes", "Memory limit of the sidecar (cgroup or configured).",
            registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "infersight_model_info", "Served model and the profile in force (always 1).",
            ["model", "version", "profile_hash"], registry=r,
        )  # fmt: skip
        self.model_trained = Gauge(
            "infersight_model_trained_timestamp_seconds", "When the model was trained.",
            ["model"], registry=r,
        )  # fmt: skip
        self.profile_created = Gauge(
            "infersight_profile_created_timestamp_seconds", "When the profile was built.",
            ["model"], registry=r,
        )  # fmt: skip
        self.log_records_dropped = Counter(
            "infersight_log_records_dropped",
            "Request-log records dropped (queue full or sink error).",
            registry=r,
        )  # fmt: skip
        self.drift_cycle_seconds = Histogram(
            "infersight_drift_cycle_seconds", "Wall time of a drift cycle (snapshot to report).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r,
        )  # fmt: skip
        self.drift_cycle_errors = Counter(
            "infersight_drift_cycle_errors", "Drift cycles that failed or timed out.", registry=r
        )
        ProcessCollector(registry=r)


class ModelMetrics:
    """Pre-bound children for one (model, protocol): no label lookups on the hot path."""

    def __init__(self, metrics: Metrics, model: str, protocol: str) -> None:
        self.model = model
        self.requests = {s: metrics.requests.labels(model, protocol, s) for s in STATUS_CLASSES}
        self.rejected = {r: metrics.rejected_requests.labels(model, r) for r in REJECT_REASONS}
        self.duration = metrics.request_duration.labels(model, protocol)
        self.upstream = {o: metrics.upstream_duration.labels(model, o) for o in UPSTREAM_OUTCOMES}
        self.monitoring_errors = {s: metrics.monitoring_errors.labels(model, s) for s in STAGES}
        self.rows = metrics.rows.labels(model)
        self.rejected_rows = metrics.rejected_rows.labels(model)
        self.non_finite = metrics.prediction_non_finite.labels(model)


class ServingStatsCollector(Collector):
    """Exports the per-model counts kept in `ModelStats` at scrape time."""

    def __init__(self, stats: Mapping[str, ModelStats]) -> None:
        self.stats = stats
        self._labels: dict[tuple[str, ...], FixedLabels] = {}

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        bins = CounterMetricFamily(
            "infersight_feature_bin", "Input values per feature and bin (bins from the profile).",
            labels=["model", "feature", "bin"],
        )  # fmt: skip
        ref = GaugeMetricFamily(
            "infersight_reference_bin_ratio", "Share of training rows in each feature bin.",
            labels=["model", "feature", "bin"],
        )  # fmt: skip
        violations = CounterMetricFamily(
            "infersight_validation_violations", "Rows with a validation violation.",
            labels=["model", "feature", "kind"],
        )  # fmt: skip
        pbins = CounterMetricFamily(
            "infersight_prediction_bin", "Predictions per output and bin.",
            labels=["model", "output", "bin"],
        )  # fmt: skip
        pref = GaugeMetricFamily(
            "infersight_reference_prediction_bin_ratio", "Share of reference predictions per bin.",
            labels=["model", "output", "bin"],
        )  # fmt: skip
        classes = CounterMetricFamily(
            "infersight_prediction_class", "Predicted classes (classes from the profile).",
            labels=["model", "output", "class"],
        )  # fmt: skip
        hist = HistogramMetricFamily(
            "infersight_prediction", "Numeric predictions (buckets from reference quantiles).",
            labels=["model", "output"],
        )  # fmt: skip
        squares = CounterMetricFamily(
            "infersight_prediction_squares",
            "Sum of squared deviations of predictions from the reference mean.",
            labels=["model", "output"],
        )  # fmt: skip
        pstat = GaugeMetricFamily(
            "infersight_reference_prediction_stat", "Reference prediction mean, std and n.",
            labels=["model", "output", "stat"],
        )  # fmt: skip
        # Every label value here comes from the profile: the series live as long as the
        # process, so each keeps its labels object (and, with it, its rendered prefix).
        cache = self._labels
        for model, s in self.stats.items():
            for check in s.checks:
                counts = s.bin_counts[check.name]
                name = check.name
                for label, count, ratio in zip(
                    check.bin_labels, counts, check.reference_ratios, strict=True
                ):
                    fixed_sample(bins, "_total", cache, ("b", model, name, label), count)
                    fixed_sample(ref, "", cache, ("r", model, name, label), ratio)
            for (feature, kind), n in s.violations.items():
                fixed_sample(violations, "_total", cache, ("v", model, feature, kind), n)
            p = s.prediction
            if p is None:
                continue
            out = p.output
            for label, count, ratio in zip(
                p.check.bin_labels, p.bin_counts, p.check.reference_ratios, strict=True
            ):
                fixed_sample(pbins, "_total", cache, ("pb", model, out, label), count)
                fixed_sample(pref, "", cache, ("pr", model, out, label), ratio)
                if not p.numeric:
                    fixed_sample(classes, "_total", cache, ("pc", model, out, label), count)
            if p.numeric:
                cumulative = cumulative_buckets(p.buckets, p.bucket_counts)
                hist.add_metric([model, out], cumulative, sum_value=p.sum)
                squares.add_metric([model, out], p.squares)
                pstat.add_metric([model, out, "mean"], p.reference_mean)
                pstat.add_metric([model, out, "std"], p.reference_std)
                pstat.add_metric([model, out, "n"], float(s.profile.n_rows))
        yield from (bins, ref, violations, pbins, pref, classes, hist, squares, pstat)


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit from cgroup v2 or v1, or None when unlimited or unknown."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        # cgroup v1 reports "unlimited" as a huge page-aligned number.
        return value if value < 1 << 60 else None
    return None


__all__ = ["OTHER_BIN", "Metrics", "ModelMetrics", "ServingStatsCollector", "status_class"]
