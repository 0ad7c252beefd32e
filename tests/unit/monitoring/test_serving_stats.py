"""Running counts per model: input bins and violations, prediction histogram and classes."""

from __future__ import annotations

import pytest

from app.monitoring.batch import Batch
from app.monitoring.feature_checks import ColumnResult
from app.monitoring.profile import (
    MISSING_BIN,
    N_QUANTILES,
    OTHER_BIN,
    UNSEEN_BIN,
    PredictionProfile,
)
from app.monitoring.serving_stats import ModelStats, PredictionStats, histogram_buckets
from app.monitoring.validator import Validator
from tests.unit.monitoring.factories import boolean, categorical, numeric, profile, text

# quantiles_1001[k] == k, so the histogram bounds are easy to read: q(p) = 1000 p.
LINEAR = [float(k) for k in range(N_QUANTILES)]
SCORE = numeric(
    "score",
    lo=0.0,
    hi=1000.0,
    edges=[250.0, 500.0, 750.0],
    mean=400.0,
    std=50.0,
    quantiles_1001=LINEAR,
)


def _non_finite(result: ColumnResult) -> int:
    return len(result.violations.get("non_finite", ()))


def numeric_prediction() -> PredictionStats:
    return PredictionStats(PredictionProfile(output_name="out", distribution=SCORE))


class TestHistogramBuckets:
    def test_bounds_from_reference_quantiles(self) -> None:
        assert histogram_buckets(SCORE) == [
            10.0,
            50.0,
            100.0,
            200.0,
            300.0,
            400.0,
            500.0,
            600.0,
            700.0,
            800.0,
            900.0,
            950.0,
            990.0,
        ]

    def test_bounds_deduplicated(self) -> None:
        # Half the reference mass at 0, the rest spread 0..1: the low quantiles all equal 0.
        q = [0.0] * 501 + [k / 500 for k in range(1, 501)]
        assert len(q) == N_QUANTILES
        f = numeric("p", lo=0.0, hi=1.0, edges=[0.5], quantiles_1001=q)
        bounds = histogram_buckets(f)
        assert bounds[0] == 0.0
        assert bounds == sorted(set(bounds))
        # 0.01 … 0.5 collapse onto 0; then 0.6 → q[600] = 0.2, …, 0.99 → q[990] = 0.98.
        assert bounds == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.98])


class TestNumericPrediction:
    def test_histogram_sum_count_squares_and_non_finite(self) -> None:
        stats = numeric_prediction()
        assert stats.output == "out"
        assert stats.numeric is True
        assert stats.reference_mean == 400.0
        assert stats.reference_std == 50.0
        values = [5.0, 10.0, 10.5, 500, 995.0, float("nan"), float("inf"), None]
        assert _non_finite(stats.observe(values)) == 2
        # Buckets are "le" bounds: 5 and 10 ≤ 10; 10.5 ≤ 50; 500 ≤ 500 (index 6); 995 → +Inf.
        expected = [0] * 14
        expected[0], expected[1], expected[6], expected[13] = 2, 1, 1, 1
        assert stats.bucket_counts == expected
        assert stats.count == 5
        assert stats.sum == pytest.approx(1520.5)
        # (5-400)² + (10-400)² + (10.5-400)² + (500-400)² + (995-400)²
        assert stats.squares == pytest.approx(156025 + 152100 + 151710.25 + 10000 + 354025)
        assert stats.non_finite == 2
        # Value bins from the profile's edges [250, 500, 750]; non-finite values → __unseen__.
        labels = stats.check.bin_labels
        counts = dict(zip(labels, stats.bin_counts, strict=True))
        assert counts == {"00": 3, "01": 1, "02": 0, "03": 1, MISSING_BIN: 1, UNSEEN_BIN: 2}

    def test_accumulates_across_responses(self) -> None:
        stats = numeric_prediction()
        assert _non_finite(stats.observe([400.0, 410.0])) == 0
        assert _non_finite(stats.observe([390.0, -float("inf")])) == 1
        assert stats.count == 3
        assert stats.sum == pytest.approx(1200.0)
        assert stats.squares == pytest.approx(200.0)
        assert stats.non_finite == 1
        assert sum(stats.bucket_counts) == 3
        assert stats.bucket_counts[5] == 2  # 390 and 400 are ≤ 400
        assert stats.bucket_counts[6] == 1  # 410 is ≤ 500

    def test_required_prediction_never_reports_missing(self) -> None:
        stats = numeric_prediction()
        assert SCORE.required is True
        assert stats.check.required is False
        assert _non_finite(stats.observe([None, None])) == 0
        assert stats.bin_counts[stats.check.missing_bin] == 2
        assert stats.count == 0

    def test_wrong_type_is_binned_unseen_not_counted(self) -> None:
        stats = numeric_prediction()
        assert _non_finite(stats.observe(["high", True, [1.0]])) == 0
        assert stats.bin_counts[stats.check.unseen_bin] == 3
        assert stats.count == 0
        assert stats.sum == 0.0

    def test_name_defaults_to_distribution_name(self) -> None:
        stats = PredictionStats(PredictionProfile(distribution=SCORE))
        assert stats.output == "score"


class TestCategoricalPrediction:
    def test_class_bins_with_unseen(self) -> None:
        dist = categorical(
            "label", {"0": 0.6, "1": 0.3}, ["0", "1", "2"], other_ratio=0.1, required=False
        )
        stats = PredictionStats(PredictionProfile(distribution=dist))
        assert stats.numeric is False
        assert stats.buckets == []
        values = [0, 1, 1.0, "1", 2, 7, "cat", None, True]
        assert _non_finite(stats.observe(values)) == 0
        counts = dict(zip(stats.check.bin_labels, stats.bin_counts, strict=True))
        # 1, 1.0, "1" are one class; "2" was seen in training (other); 7, "cat", True were not.
        assert counts == {"0": 1, "1": 3, OTHER_BIN: 1, UNSEEN_BIN: 3, MISSING_BIN: 1}
        assert stats.count == 0
        assert stats.squares == 0.0
        stats.observe(["0"])
        assert stats.bin_counts[0] == 2


class TestModelStats:
    def test_observe_inputs_accumulates(self) -> None:
        prof = profile(
            [
                numeric("x", lo=0.0, hi=10.0, edges=[5.0], range_tolerance=0.0),
                categorical("c", {"a": 1.0}, ["a"]),
                boolean("b"),
                text("t"),
            ],
            prediction=PredictionProfile(distribution=SCORE),
        )
        validator = Validator(prof)
        stats = ModelStats(prof, validator.checks)
        assert stats.prediction is not None
        # Every (feature, kind) the feature can have starts at 0, plus unknown features.
        assert stats.violations[("x", "out_of_range")] == 0
        assert stats.violations[("x", "non_finite")] == 0
        assert stats.violations[("c", "unknown_category")] == 0
        assert stats.violations[("b", "wrong_type")] == 0
        assert stats.violations[("t", "missing")] == 0
        assert stats.violations[(OTHER_BIN, "unknown_feature")] == 0
        assert ("b", "out_of_range") not in stats.violations
        assert len(stats.violations) == 4 + 3 + 2 + 2 + 1

        first = Batch(
            3,
            {
                "x": [1.0, 20.0, None],
                "c": ["a", "z", "a"],
                "b": [True, False, "maybe"],
                "t": ["hi there", "x", "a b c d e f"],
                "extra": [1, 2, 3],
            },
        )
        second = Batch(2, {"x": [6.0, float("nan")], "c": ["a", "a"], "b": [1, 0], "t": ["a", "b"]})
        stats.observe_inputs(validator.validate(first))
        stats.observe_inputs(validator.validate(second))

        assert stats.bin_counts["x"] == [1, 2, 1, 1]  # ≤5: 1.0 | >5: 20, 6 | missing | nan
        assert stats.bin_counts["c"] == [4, 0, 1, 0]  # a | other | unseen z | missing
        assert stats.bin_counts["b"] == [2, 2, 1, 0]  # false | true | unseen | missing
        assert stats.bin_counts["t"] == [4, 0, 1, 0, 0]  # token counts 2,1,1,1 | 6
        assert stats.violations[("x", "out_of_range")] == 1
        assert stats.violations[("x", "missing")] == 1
        assert stats.violations[("x", "non_finite")] == 1
        assert stats.violations[("c", "unknown_category")] == 1
        assert stats.violations[("b", "wrong_type")] == 1
        assert stats.violations[(OTHER_BIN, "unknown_feature")] == 3
        assert sum(stats.violations.values()) == 8

    def test_no_prediction_section(self) -> None:
        prof = profile([numeric("x")])
        stats = ModelStats(prof, Validator(prof).checks)
        assert stats.prediction is None
        assert stats.bin_counts == {"x": [0, 0, 0, 0, 0, 0]}
