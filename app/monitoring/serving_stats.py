"""Running counts of what one model has served: input bins, violations, prediction statistics.

Plain integer lists updated on the event loop, read at scrape time by a custom collector —
cheaper on the hot path than one locked metric child per bin.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from app.monitoring.feature_checks import ColumnResult, FeatureCheck, compile_feature
from app.monitoring.profile import (
    OTHER_BIN,
    VIOLATION_KINDS,
    NumericFeature,
    PredictionProfile,
    Profile,
    ViolationKind,
)
from app.monitoring.validator import BatchReport

_KINDS_BY_FEATURE: dict[str, tuple[ViolationKind, ...]] = {
    "numeric": ("missing", "wrong_type", "out_of_range", "non_finite"),
    "categorical": ("missing", "wrong_type", "unknown_category"),
    "boolean": ("missing", "wrong_type"),
    "text": ("missing", "wrong_type"),
}
_HISTOGRAM_QUANTILES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def histogram_buckets(feature: NumericFeature) -> list[float]:
    """Upper bounds for the prediction histogram, from the reference quantiles (deduplicated)."""
    q = feature.quantiles_1001
    last = len(q) - 1
    bounds = sorted({q[round(p * last)] for p in _HISTOGRAM_QUANTILES})
    return bounds


class PredictionStats:
    """Bins, histogram, squares and non-finite count of one model output."""

    def __init__(self, prediction: PredictionProfile) -> None:
        self.profile = prediction
        self.output = prediction.output_name or prediction.distribution.name
        self.check: FeatureCheck = compile_feature(
            prediction.distribution.model_copy(update={"required": False})
        )
        self.bin_counts = [0] * len(self.check.bin_labels)
        self.numeric = isinstance(prediction.distribution, NumericFeature)
        dist = prediction.distribution
        self.reference_mean = dist.mean if isinstance(dist, NumericFeature) else 0.0
        self.reference_std = dist.std if isinstance(dist, NumericFeature) else 0.0
        self.buckets = histogram_buckets(dist) if isinstance(dist, NumericFeature) else []
        self.bucket_counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0
        self.squares = 0.0
        self.non_finite = 0

    def observe(self, values: list[Any]) -> ColumnResult:
        """Count one response's predictions (the result's `non_finite` rows are NaN/Inf)."""
        result = self.check.check_python(values)
        for i, c in enumerate(result.bin_counts):
            self.bin_counts[i] += c
        bad = len(result.violations.get("non_finite", ()))
        self.non_finite += bad
        if self.numeric and result.clean:
            mean = self.reference_mean
            buckets, counts = self.buckets, self.bucket_counts
            for x in result.clean:
                counts[bisect_left(buckets, x)] += 1
                d = x - mean
                self.squares += d * d
            self.sum += math.fsum(result.clean)
            self.count += len(result.clean)
        return result


class ModelStats:
    """Everything counted for one monitored model."""

    def __init__(self, profile: Profile, checks: list[FeatureCheck]) -> None:
        self.profile = profile
        self.checks = checks
        self.bin_counts: dict[str, list[int]] = {c.name: [0] * len(c.bin_labels) for c in checks}
        self.violations: dict[tuple[str, ViolationKind], int] = {}
        for c in checks:
            for kind in _KINDS_BY_FEATURE[c.kind]:
                self.violations[(c.name, kind)] = 0
        self.violations[(OTHER_BIN, "unknown_feature")] = 0
        self.prediction = PredictionStats(profile.prediction) if profile.prediction else None

    def observe_inputs(self, report: BatchReport) -> None:
        """Add one batch's bins and violations (every decoded row, rejected or not)."""
        for name, result in report.columns.items():
            counts = self.bin_counts[name]
            for i, c in enumerate(result.bin_counts):
                if c:
                    counts[i] += c
        violations = self.violations
        for key, n in report.violation_counts.items():
            violations[key] = violations.get(key, 0) + n


__all__ = ["VIOLATION_KINDS", "ModelStats", "PredictionStats", "histogram_buckets"]
