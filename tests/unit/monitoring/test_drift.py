"""The drift cycle: verdicts per feature and output, the minimum window, the correction across
a model's deciding tests, the effect floors, calibrated thresholds, and every odd window
(empty, all missing, constant, one category, unseen categories) without a raise or a NaN."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats

from app.monitoring.drift import evaluate, prediction_window, reference_sample
from app.monitoring.drift_types import (
    Correction,
    DriftConfig,
    FeatureDrift,
    FeatureSample,
    ModelDriftReport,
    ModelSnapshot,
)
from app.monitoring.feature_checks import compile_feature
from app.monitoring.profile import (
    MISSING_BIN,
    UNSEEN_BIN,
    Feature,
    ModelInfo,
    NumericFeature,
    Profile,
)
from app.monitoring.profile_builder import BuildOptions, build_profile
from app.monitoring.stattests import ks_pvalue, ks_statistic
from app.monitoring.values import token_count

N_TRAIN = 20000
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


# --- helpers (also used by the power test) ------------------------------------------------------


def training_columns(n: int, seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Training data whose distributions the tests know exactly."""
    r = np.random.default_rng(seed)
    xm: list[float | None] = r.normal(10.0, 2.0, size=n).tolist()
    for i in np.flatnonzero(r.random(n) < 0.05):
        xm[i] = None
    columns: dict[str, Any] = {
        "x": r.normal(0.0, 1.0, size=n),
        "xm": xm,
        "color": r.choice(
            ["red", "green", "blue", "black"], p=[0.5, 0.2, 0.2, 0.1], size=n
        ).tolist(),
        "flag": (r.random(n) < 0.3).tolist(),
        "note": [" ".join(r.choice(WORDS, size=r.integers(3, 9))) for _ in range(n)],
        "y": (r.random(n) < 0.5).astype(np.int64),
        "score": r.beta(2.0, 5.0, size=n),
    }
    dtypes = {"x": "float64", "xm": "float64", "color": "object", "flag": "bool",
              "note": "object", "y": "int64", "score": "float64"}  # fmt: skip
    return columns, dtypes


def build(
    columns: Mapping[str, Any], dtypes: Mapping[str, str], calibrate: bool = True, **kw: Any
) -> Profile:
    profile, _ = build_profile(
        columns,
        dtypes,
        target=kw.pop("target", "y"),
        model=ModelInfo(name="m"),
        data_hash="sha256:test",
        options=BuildOptions(calibration_rows=5000 if calibrate else 0),
        **kw,
    )
    return profile


def numeric_sample(name: str, values: Any, n_missing: int = 0) -> FeatureSample:
    arr = np.asarray(values, dtype=np.float64)
    return FeatureSample(name, "numeric", arr.size + n_missing, n_missing, values=arr)


def binned_sample(feature: Feature, counts: Mapping[str, int]) -> FeatureSample:
    """A categorical/boolean window from counts per bin label (absent labels count 0)."""
    labels = compile_feature(feature).bin_labels
    assert set(counts) <= set(labels), (counts, labels)
    bins = tuple(int(counts.get(label, 0)) for label in labels)
    return FeatureSample(
        feature.name, feature.kind, sum(bins), counts.get(MISSING_BIN, 0), bin_counts=bins
    )


def text_sample(name: str, texts: Sequence[str], with_counts: bool = True) -> FeatureSample:
    counts = np.array([token_count(t) for t in texts], dtype=np.float64) if with_counts else None
    return FeatureSample(name, "text", len(texts), 0, values=counts, texts=tuple(texts))


def feature_of(profile: Profile, name: str) -> Any:
    return next(f for f in profile.features if f.name == name)


def run(
    profile: Profile,
    features: Sequence[FeatureSample],
    prediction: FeatureSample | None = None,
    **config: Any,
) -> ModelDriftReport:
    snapshot = ModelSnapshot("m", 0.0, tuple(features), prediction)
    return evaluate(profile, snapshot, DriftConfig(**config), now=123.0)


def verdicts(report: ModelDriftReport) -> dict[str, bool | None]:
    return {f.feature: f.drift for f in report.features}


def result(fd: FeatureDrift, test: str) -> Any:
    return next(t for t in fd.tests if t.test == test)


def assert_clean(report: ModelDriftReport) -> None:
    """No NaN or infinity anywhere: the report is valid JSON."""
    json.dumps(report.as_dict(), allow_nan=False)
    items = [*report.features, *([report.prediction] if report.prediction else [])]
    for fd in items:
        for t in fd.tests:
            for v in (t.statistic, t.p_value, t.effect, t.threshold, t.p_adjusted):
                assert v is None or math.isfinite(v), (fd.feature, t)
            if t.p_value is not None:
                assert 0.0 < t.p_value <= 1.0


# --- a realistic model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prof() -> Profile:
    columns, dtypes = training_columns(N_TRAIN, seed=0)
    return build(columns, dtypes, prediction="score")


def windows(prof: Profile, n: int, seed: int, **shift: float) -> list[FeatureSample]:
    """Serving windows of n rows from the training distributions, optionally shifted."""
    r = np.random.default_rng(seed)
    x = r.normal(shift.get("x", 0.0), 1.0, size=n)
    n_missing = int(r.binomial(n, 0.05 + shift.get("xm_missing", 0.0)))
    xm = r.normal(10.0, 2.0, size=n - n_missing)
    color_p = np.array([0.5, 0.2, 0.2, 0.1]) + shift.get("red", 0.0) * np.array(
        [1, -0.4, -0.4, -0.2]
    )
    color = r.multinomial(n, color_p)
    n_true = int(r.binomial(n, 0.3 + shift.get("flag", 0.0)))
    texts = [" ".join(r.choice(WORDS, size=r.integers(3, 9))) for _ in range(n)]
    return [
        numeric_sample("x", x),
        numeric_sample("xm", xm, n_missing),
        binned_sample(feature_of(prof, "color"), dict(zip(["red", "green", "blue", "black"], color.tolist(), strict=True))),
        binned_sample(feature_of(prof, "flag"), {"true": n_true, "false": n - n_true}),
        text_sample("note", texts),
    ]  # fmt: skip


class TestVerdicts:
    def test_windows_from_the_training_distribution_do_not_drift(self, prof: Profile) -> None:
        for seed in range(3):
            report = run(prof, windows(prof, 2000, seed))
            assert verdicts(report) == dict.fromkeys(["x", "xm", "color", "flag", "note"], False)
            assert all(f.reason.startswith("no drift") for f in report.features)
            assert_clean(report)

    def test_each_shift_is_caught_on_its_feature_only(self, prof: Profile) -> None:
        report = run(prof, windows(prof, 2000, 7, x=0.5, xm_missing=0.1, red=0.1, flag=0.1))
        assert verdicts(report) == {
            "x": True, "xm": True, "color": True, "flag": True, "note": False,
        }  # fmt: skip
        x = report.features[0]
        assert "ks" in x.reason
        assert "missing" in report.features[1].reason
        assert "chi2" in report.features[2].reason
        assert_clean(report)

    def test_the_report_carries_the_registry_statistics(self, prof: Profile) -> None:
        sample = numeric_sample("x", np.random.default_rng(3).normal(0.3, 1.0, size=1500))
        report = run(prof, [sample])
        fd = report.features[0]
        assert fd.n_rows == 1500
        assert fd.reference_rows == N_TRAIN
        assert [t.test for t in fd.tests] == [
            "ks", "wasserstein", "psi", "js", "welch_t", "mann_whitney", "anova", "kruskal",
            "missing",
        ]  # fmt: skip
        ks = result(fd, "ks")
        q = np.asarray(feature_of(prof, "x").quantiles_1001)
        assert ks.statistic == pytest.approx(ks_statistic(np.sort(sample.values), q), abs=1e-12)
        assert ks.p_value == pytest.approx(ks_pvalue(ks.statistic, 1500, N_TRAIN), rel=1e-12)
        assert ks.decides
        assert ks.direction == "above"
        assert ks.threshold == 0.1
        assert result(fd, "anova").direction == "below"
        assert not result(fd, "psi").decides
        assert report.computed_at == 123.0

    def test_welch_uses_the_reference_summary(self, prof: Profile) -> None:
        values = np.random.default_rng(4).normal(0.2, 1.1, size=1200)
        fd = run(prof, [numeric_sample("x", values)]).features[0]
        f = feature_of(prof, "x")
        ref_std = f.std * math.sqrt(N_TRAIN / (N_TRAIN - 1))
        expected = stats.ttest_ind_from_stats(
            values.mean(), values.std(ddof=1), 1200, f.mean, ref_std, N_TRAIN, equal_var=False
        )
        welch = result(fd, "welch_t")
        assert welch.statistic == pytest.approx(expected.statistic, rel=1e-9)
        assert welch.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert welch.effect == pytest.approx(abs(values.mean() - f.mean) / f.std, rel=1e-9)

    def test_a_tiny_shift_in_a_huge_window_is_significant_but_below_the_floor(
        self, prof: Profile
    ) -> None:
        x = np.random.default_rng(5).normal(0.08, 1.0, size=200_000)
        fd = run(prof, [numeric_sample("x", x)]).features[0]
        ks = result(fd, "ks")
        assert ks.p_adjusted is not None
        assert ks.p_adjusted < 1e-6
        assert ks.effect < 0.1
        assert fd.drift is False

    def test_effect_floors_from_the_config(self, prof: Profile) -> None:
        x = np.random.default_rng(6).normal(0.5, 1.0, size=2000)
        fd = run(prof, [numeric_sample("x", x)], effect_floors={"ks": 0.5}).features[0]
        assert result(fd, "ks").threshold == 0.5
        assert fd.drift is False


class TestCorrection:
    def deciding(self, report: ModelDriftReport) -> list[Any]:
        return [t for f in report.features for t in f.tests if t.p_adjusted is not None]

    @pytest.mark.parametrize("method", ["bonferroni", "bh", "none"])
    def test_across_every_deciding_test_of_the_model(
        self, prof: Profile, method: Correction
    ) -> None:
        report = run(prof, windows(prof, 1500, 11, x=0.15, red=0.04), correction=method)
        included = self.deciding(report)
        # x, xm (+ missing: 5 % in the reference), color, flag, note (chi2). Tests that cannot
        # reject are left out: missing shares where neither side has a missing value, and the
        # OOV rate (every word of these texts is in the vocabulary, on both sides).
        assert sorted(t.test for t in included) == sorted(
            ["ks", "ks", "missing", "chi2", "chi2", "chi2"]
        )
        p = np.array([t.p_value for t in included])
        adjusted = np.array([t.p_adjusted for t in included])
        if method == "bonferroni":
            np.testing.assert_allclose(adjusted, np.minimum(1.0, p * p.size), rtol=1e-12)
        elif method == "bh":
            expected = stats.false_discovery_control(p, method="bh")
            np.testing.assert_allclose(adjusted, expected, rtol=1e-12)
        else:
            np.testing.assert_array_equal(adjusted, p)
        for t in included:
            assert t.drift == (t.p_adjusted <= 0.01 and t.effect >= t.threshold)

    def test_informative_tests_use_the_level_the_correction_leaves(self, prof: Profile) -> None:
        report = run(prof, windows(prof, 1500, 12))
        m = len(self.deciding(report))
        x = report.features[0]
        assert result(x, "anova").threshold == pytest.approx(0.01 / m)
        assert result(x, "kruskal").threshold == pytest.approx(0.01 / m)

    def test_the_prediction_counts_in_the_correction(self, prof: Profile) -> None:
        scores = np.random.default_rng(1).beta(2.0, 5.0, size=2000)
        pred = numeric_sample("predict", scores)
        without = run(prof, [numeric_sample("x", np.zeros(0))])
        with_pred = run(prof, [numeric_sample("x", np.zeros(0))], pred)
        assert len(self.deciding(without)) == 0
        assert with_pred.prediction is not None
        assert result(with_pred.prediction, "ks").p_adjusted == pytest.approx(
            result(with_pred.prediction, "ks").p_value
        )


class TestMinimumWindow:
    def test_below_min_rows_there_is_no_verdict(self, prof: Profile) -> None:
        x = numeric_sample("x", np.random.default_rng(0).normal(2.0, 1.0, size=999))
        fd = run(prof, [x]).features[0]
        assert fd.drift is None
        assert "999 values" in fd.reason
        assert "min_rows=1000" in fd.reason
        assert all(t.drift is None and t.p_adjusted is None for t in fd.tests)
        assert result(fd, "ks").effect > 0.5  # computed and shown, just not judged

    def test_the_default_minimum(self) -> None:
        assert DriftConfig().min_rows == 1000

    def test_enough_rows_but_too_few_present_values(self, prof: Profile) -> None:
        # 960 values: with 1,040 missing (52 %) the missing share drifts; with 50 missing
        # (5 %, as in training) it does not, and the distribution is still unjudged.
        xm = np.random.default_rng(0).normal(10.0, 2.0, size=960)
        gone = run(prof, [numeric_sample("xm", xm, n_missing=1040)]).features[0]
        assert gone.drift is True
        few = run(prof, [numeric_sample("xm", xm, n_missing=50)]).features[0]
        assert result(few, "missing").drift is False
        assert few.drift is None
        assert "960 values" in few.reason

    def test_a_lower_minimum_gives_verdicts(self, prof: Profile) -> None:
        x = numeric_sample("x", np.random.default_rng(0).normal(2.0, 1.0, size=300))
        assert run(prof, [x], min_rows=300).features[0].drift is True

    def test_empty_window(self, prof: Profile) -> None:
        samples = [
            numeric_sample("x", []),
            binned_sample(feature_of(prof, "color"), {}),
            text_sample("note", []),
        ]
        report = run(prof, samples, numeric_sample("predict", []))
        assert verdicts(report) == {"x": None, "color": None, "note": None}
        assert all(f.tests == () for f in report.features)
        assert report.prediction_window == {}
        assert_clean(report)


class TestEdgeCases:
    def test_all_missing_window_drifts_by_the_missing_share(self, prof: Profile) -> None:
        fd = run(prof, [numeric_sample("x", [], n_missing=2000)]).features[0]
        assert fd.drift is True
        assert [t.test for t in fd.tests] == ["missing"]
        assert result(fd, "missing").effect == pytest.approx(1.0)
        assert "missing" in fd.reason

    def test_all_missing_categorical(self, prof: Profile) -> None:
        fd = run(prof, [binned_sample(feature_of(prof, "color"), {MISSING_BIN: 1500})]).features[0]
        assert fd.drift is True
        assert_clean(run(prof, [binned_sample(feature_of(prof, "color"), {MISSING_BIN: 1500})]))

    def test_a_few_missing_values_where_training_had_none(self, prof: Profile) -> None:
        x = numeric_sample("x", np.random.default_rng(0).normal(size=1990), n_missing=10)
        fd = run(prof, [x]).features[0]
        missing = result(fd, "missing")  # Fisher's exact test: expected counts are tiny
        assert missing.p_value == pytest.approx(
            stats.fisher_exact([[10, 1990], [0, N_TRAIN]]).pvalue, rel=1e-9
        )
        assert fd.drift is False  # 0.5 % is below the 2-point floor

    def test_constant_feature(self) -> None:
        columns = {"c": np.full(5000, 3.0), "y": np.zeros(5000, dtype=np.int64)}
        profile = build(columns, {"c": "float64", "y": "int64"})
        same = run(profile, [numeric_sample("c", np.full(2000, 3.0))])
        assert verdicts(same) == {"c": False}
        assert_clean(same)
        moved = run(profile, [numeric_sample("c", np.full(2000, 4.0))])
        assert verdicts(moved) == {"c": True}
        assert_clean(moved)
        noisy = run(profile, [numeric_sample("c", np.random.default_rng(0).normal(3, 1, 2000))])
        assert verdicts(noisy) == {"c": True}
        assert_clean(noisy)

    def test_single_category(self) -> None:
        columns = {"k": ["only"] * 3000, "y": np.zeros(3000, dtype=np.int64)}
        profile = build(columns, {"k": "object", "y": "int64"})
        report = run(profile, [binned_sample(feature_of(profile, "k"), {"only": 1500})])
        fd = report.features[0]
        assert fd.drift is False
        chi2 = result(fd, "chi2")
        assert (chi2.p_value, chi2.p_adjusted, chi2.drift) == (1.0, None, False)
        assert_clean(report)

    def test_a_category_absent_from_the_reference(self, prof: Profile) -> None:
        color = feature_of(prof, "color")
        counts = {"red": 700, "green": 300, "blue": 300, "black": 150, UNSEEN_BIN: 250}
        report = run(prof, [binned_sample(color, counts)])
        fd = report.features[0]
        chi2 = result(fd, "chi2")
        assert fd.drift is True
        assert chi2.p_value is not None
        assert 0.0 < chi2.p_value < 1e-10
        assert chi2.effect == pytest.approx(250 / 1700, rel=1e-9)  # the unseen share is L-inf
        assert_clean(report)

    def test_a_new_category_only_window(self, prof: Profile) -> None:
        report = run(prof, [binned_sample(feature_of(prof, "color"), {UNSEEN_BIN: 1200})])
        assert verdicts(report) == {"color": True}
        assert_clean(report)

    def test_boolean_that_is_always_true(self, prof: Profile) -> None:
        report = run(prof, [binned_sample(feature_of(prof, "flag"), {"true": 1500})])
        assert verdicts(report) == {"flag": True}
        assert_clean(report)

    def test_text_out_of_vocabulary_and_longer_texts(self, prof: Profile) -> None:
        r = np.random.default_rng(0)
        new_words = [" ".join(r.choice(["zebra", "quux", "the"], size=5)) for _ in range(1500)]
        fd = run(prof, [text_sample("note", new_words)]).features[0]
        assert fd.drift is True
        oov = result(fd, "oov")
        assert oov.effect > 0.5
        assert "oov" in fd.reason
        long_texts = [" ".join(r.choice(WORDS, size=20)) for _ in range(1500)]
        fd = run(prof, [text_sample("note", long_texts)]).features[0]
        assert fd.drift is True
        assert result(fd, "chi2").drift is True
        assert result(fd, "oov").drift is False

    def test_text_word_counts_come_from_the_texts_when_missing(self, prof: Profile) -> None:
        r = np.random.default_rng(1)
        texts = [" ".join(r.choice(WORDS, size=r.integers(3, 9))) for _ in range(1500)]
        with_counts = run(prof, [text_sample("note", texts)]).features[0]
        without = run(prof, [text_sample("note", texts, with_counts=False)]).features[0]
        assert with_counts.tests == without.tests
        assert without.drift is False

    def test_odd_windows_are_reported_not_raised(self, prof: Profile) -> None:
        color = feature_of(prof, "color")
        samples = [
            numeric_sample("nobody", np.zeros(2000)),
            FeatureSample("color", "numeric", 2000, 0, values=np.zeros(2000)),
            FeatureSample("flag", "boolean", 10, 0, bin_counts=(5, 5)),
            binned_sample(color, {"red": 2000}),
        ]
        report = run(prof, samples)
        assert verdicts(report) == {"nobody": None, "color": True, "flag": None}
        reasons = [f.reason for f in report.features]
        assert "not in the profile" in reasons[0]
        assert "window is numeric" in reasons[1]
        assert "2 bins" in reasons[2]
        assert_clean(report)

    def test_non_finite_values_are_ignored(self, prof: Profile) -> None:
        values = np.random.default_rng(0).normal(size=2000)
        values[:5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
        report = run(prof, [numeric_sample("x", values)])
        assert verdicts(report) == {"x": False}
        assert_clean(report)


class TestPrediction:
    def test_numeric_prediction_window_statistics(self, prof: Profile) -> None:
        scores = np.random.default_rng(2).beta(2.0, 5.0, size=1500)
        report = run(prof, [], numeric_sample("predict", scores))
        assert report.prediction is not None
        assert report.prediction.feature == "predict"
        assert report.prediction.drift is False
        assert report.prediction_window == pytest.approx(
            {
                "mean": scores.mean(),
                "median": np.median(scores),
                "std": scores.std(),
                "min": scores.min(),
                "max": scores.max(),
            },
            rel=1e-12,
        )

    def test_shifted_predictions_drift(self, prof: Profile) -> None:
        scores = np.random.default_rng(2).beta(2.0, 3.0, size=1500)
        report = run(prof, [], numeric_sample("predict", scores))
        assert report.prediction is not None
        assert report.prediction.drift is True

    def test_categorical_prediction(self) -> None:
        columns, dtypes = training_columns(5000, seed=3)
        profile = build(columns, dtypes, prediction="y", target=None)
        assert profile.prediction is not None
        dist = profile.prediction.distribution
        assert dist.kind == "categorical"
        sample = binned_sample(dist, {"0": 760, "1": 740})
        report = run(profile, [], sample)
        assert report.prediction is not None
        assert report.prediction.drift is False
        assert report.prediction_window == {}
        assert prediction_window(None) == {}


class TestCalibratedThresholds:
    def test_distance_tests_use_the_profile_thresholds(self, prof: Profile) -> None:
        f: NumericFeature = feature_of(prof, "x")
        assert set(f.drift_thresholds) == {"psi", "js", "wasserstein", "calibration_rows"}
        x = numeric_sample("x", np.random.default_rng(0).normal(size=5000))
        fd = run(prof, [x]).features[0]
        for name in ("psi", "js", "wasserstein"):
            assert result(fd, name).threshold == f.drift_thresholds[name]

    def test_smaller_windows_get_wider_thresholds(self, prof: Profile) -> None:
        f: NumericFeature = feature_of(prof, "x")
        n_ref = N_TRAIN
        x = numeric_sample("x", np.random.default_rng(0).normal(size=1250))
        fd = run(prof, [x]).features[0]
        ratio = (1 / 1250 + 1 / n_ref) / (1 / 5000 + 1 / n_ref)
        assert result(fd, "psi").threshold == pytest.approx(f.drift_thresholds["psi"] * ratio)
        assert result(fd, "js").threshold == pytest.approx(
            f.drift_thresholds["js"] * math.sqrt(ratio)
        )

    def test_without_calibration_the_defaults_apply(self) -> None:
        columns, dtypes = training_columns(3000, seed=4)
        profile = build(columns, dtypes, calibrate=False)
        assert all(f.drift_thresholds == {} for f in profile.features)
        fd = run(profile, [numeric_sample("x", np.zeros(1000))], effect_floors={"psi": 0.3})
        assert result(fd.features[0], "psi").threshold == 0.3
        assert result(fd.features[0], "js").threshold == 0.1


def test_reference_sample_prefers_the_raw_reservoir(prof: Profile) -> None:
    f: NumericFeature = feature_of(prof, "x")
    np.testing.assert_array_equal(reference_sample(f), np.asarray(f.quantiles_1001))
    g = f.model_copy(update={"sample": [3.0, 1.0, 2.0]})
    np.testing.assert_array_equal(reference_sample(g), [1.0, 2.0, 3.0])
