"""Metrics of the shadow mirror, on an injected registry, with children pre-bound per model.

Bounded labels: `model` comes from the profiles; `outcome` and `result` from fixed sets. Every
child exists from construction, so each series is exported at 0 before the first request.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from app.telemetry.metrics import LATENCY_BUCKETS, UPSTREAM_OUTCOMES

SHADOW_OUTCOMES = tuple(o for o in UPSTREAM_OUTCOMES if o != "circuit_open")
"""ok (2xx), error_status (any other status), unavailable, timeout, bad_response (not HTTP, or
a body the codec cannot decode)."""
COMPARISON_RESULTS = ("agree", "disagree")
DIFFERENCE_BUCKETS = (
    1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0, 100.0, 1000.0,
)  # fmt: skip


class ShadowModelMetrics:
    """Pre-bound children for one model: no label lookups in the mirror's workers."""

    def __init__(self, metrics: ShadowMetrics, model: str) -> None:
        self.requests = {o: metrics.requests.labels(model, o) for o in SHADOW_OUTCOMES}
        self.errors = metrics.errors.labels(model)
        self.dropped = metrics.dropped.labels(model)
        self.duration = metrics.duration.labels(model)
        self.comparisons = {r: metrics.comparisons.labels(model, r) for r in COMPARISON_RESULTS}
        self.abs_difference = metrics.abs_difference.labels(model)


class ShadowMetrics:
    """`infersight_shadow_*` metric families and their children for every profiled model."""

    def __init__(self, registry: CollectorRegistry, models: Iterable[str]) -> None:
        r = registry
        self.requests = Counter(
            "infersight_shadow_requests", "Requests mirrored to the shadow model, by outcome.",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "infersight_shadow_errors",
            "Mirrored requests that gave no comparable predictions (failed, undecodable, "
            "or rows that do not line up with the primary's).",
            ["model"], registry=r,
        )  # fmt: skip
        self.dropped = Counter(
            "infersight_shadow_dropped", "Requests not mirrored because the queue was full.",
            ["model"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "infersight_shadow_duration_seconds",
            "Time the shadow model took to answer (any status).",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.comparisons = Counter(
            "infersight_shadow_comparisons", "Rows compared between the shadow and the primary.",
            ["model", "result"], registry=r,
        )  # fmt: skip
        self.abs_difference = Histogram(
            "infersight_shadow_abs_difference",
            "Absolute difference between shadow and primary numeric predictions, per row.",
            ["model"], buckets=DIFFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.models = {name: ShadowModelMetrics(self, name) for name in models}

    def __getitem__(self, model: str) -> ShadowModelMetrics:
        return self.models[model]
