"""Calibrated distance thresholds: bootstrap null distributions from the training values, their
high quantile stored per feature by the profile builder."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.monitoring.calibration import calibrate_thresholds
from app.monitoring.feature_checks import compile_feature
from app.monitoring.profile_builder import BuildOptions, BuildReport, describe_column
from app.monitoring.stattests import (
    bin_counts,
    js_distance,
    linf,
    psi,
    reference_sample,
    wasserstein_1,
)
from tests.unit.monitoring.test_drift import binned_sample, build, training_columns


def describe(values: list[Any] | np.ndarray[Any, Any], dtype: str = "object") -> Any:
    return describe_column("col", values, dtype, BuildOptions(), BuildReport())


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


NORMAL = rng(0).normal(5.0, 2.0, size=20000)


class TestNumeric:
    def test_keys_and_reproducibility(self) -> None:
        f = describe(NORMAL, "float64")
        a = calibrate_thresholds(f, NORMAL, 2000, rng=rng(1))
        b = calibrate_thresholds(f, NORMAL, 2000, rng=rng(1))
        assert a == b
        assert set(a) == {"psi", "js", "wasserstein", "calibration_rows"}
        assert a["calibration_rows"] == 2000
        assert all(v > 0 for v in a.values())

    def test_the_threshold_is_a_high_quantile_of_fresh_null_windows(self) -> None:
        """Fresh windows from the training distribution (as serving sees them, against a
        finite training sample) cross the 0.99 thresholds in about 1-3 % of windows on average
        over training sets; windows shifted by 0.25 std almost always do."""
        crossed: dict[str, list[float]] = {"psi": [], "js": [], "wasserstein": []}
        shifted: dict[str, list[float]] = {"psi": [], "js": [], "wasserstein": []}
        for seed in range(8):
            train = rng(seed).normal(5.0, 2.0, size=20000)
            f = describe(train, "float64")
            th = calibrate_thresholds(f, train, 5000, rng=rng(100 + seed))
            for shift, tally in ((0.0, crossed), (0.5, shifted)):
                windows = np.sort(rng(200 + seed).normal(5.0 + shift, 2.0, (100, 5000)), axis=1)
                counts = np.array([bin_counts(w, f.bin_edges, is_sorted=True) for w in windows])
                ratios = np.asarray(f.bin_ratios)
                scores = {
                    "psi": psi(counts, ratios, train.size),
                    "js": js_distance(counts, ratios),
                    "wasserstein": wasserstein_1(windows, reference_sample(f)) / f.std,
                }
                for name, values in scores.items():
                    tally[name].append(float(np.mean(values > th[name])))
        for name in crossed:
            assert np.mean(crossed[name]) <= 0.04, (name, crossed[name])
            assert min(shifted[name]) == 1.0, (name, shifted[name])

    def test_smaller_windows_get_larger_thresholds(self) -> None:
        f = describe(NORMAL, "float64")
        small = calibrate_thresholds(f, NORMAL, 500, rng=rng(2))
        large = calibrate_thresholds(f, NORMAL, 5000, rng=rng(2))
        for name in ("psi", "js", "wasserstein"):
            assert small[name] > large[name]

    def test_a_constant_feature_calibrates_to_zero(self) -> None:
        values = np.full(1000, 7.0)
        thresholds = calibrate_thresholds(describe(values, "float64"), values, 100)
        assert thresholds == {"psi": 0.0, "js": 0.0, "wasserstein": 0.0, "calibration_rows": 100}

    def test_missing_values_are_left_out(self) -> None:
        values: list[Any] = [*NORMAL[:5000].tolist(), *([None] * 5000)]
        f = describe(values, "float64")
        assert f.missing_ratio == 0.5
        thresholds = calibrate_thresholds(f, values, 1000, rng=rng(3))
        assert set(thresholds) == {"psi", "js", "wasserstein", "calibration_rows"}

    def test_nothing_to_calibrate(self) -> None:
        f = describe(NORMAL, "float64")
        assert calibrate_thresholds(f, [None, None], 100) == {}
        assert calibrate_thresholds(f, NORMAL, 0) == {}


class TestBinned:
    def test_the_documented_bootstrap_by_hand(self) -> None:
        values = rng(4).choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=5000).tolist()
        values[:250] = [None] * 250
        f = describe(values)
        got = calibrate_thresholds(f, values, 1000, n_boot=50, quantile=0.9, rng=rng(5))
        check = compile_feature(f)
        tally = np.asarray(check.check_vectorized(values).bin_counts, dtype=np.float64)
        draws = rng(5).multinomial(1000, tally / tally.sum(), size=50)
        keep = np.arange(tally.size) != check.missing_bin
        ratios = np.asarray(check.reference_ratios)[keep]
        n_ref = tally[keep].sum()
        widen = 1 + 1000 / n_ref  # serving windows also meet the training data's own noise
        expected = {
            "psi": np.quantile(psi(draws[:, keep], ratios, n_ref), 0.9) * widen,
            "js": np.quantile(js_distance(draws[:, keep], ratios), 0.9) * widen**0.5,
            "linf": np.quantile(linf(draws[:, keep], ratios), 0.9) * widen**0.5,
            "calibration_rows": 1000.0,
        }
        assert got == pytest.approx(expected, rel=1e-12)

    def test_more_categories_get_a_higher_psi_threshold(self) -> None:
        two = rng(6).choice(["a", "b"], size=20000).tolist()
        twelve = rng(6).choice([f"v{i}" for i in range(12)], size=20000).tolist()
        t2 = calibrate_thresholds(describe(two), two, 1000, rng=rng(7))
        t12 = calibrate_thresholds(describe(twelve), twelve, 1000, rng=rng(7))
        assert t12["psi"] > 3 * t2["psi"]
        assert 0 < t2["psi"] < 0.2  # the fixed default would be far too lax for both

    def test_boolean(self) -> None:
        values = (rng(8).random(5000) < 0.3).tolist()
        f = describe(values, "bool")
        thresholds = calibrate_thresholds(f, values, 1000, rng=rng(9))
        assert set(thresholds) == {"psi", "js", "linf", "calibration_rows"}
        window = binned_sample(f, {"true": 300, "false": 700})
        assert window.n_rows == 1000


def test_text_calibrates_psi_on_word_counts() -> None:
    r = rng(10)
    values = [" ".join(["w"] * int(k)) for k in r.integers(3, 12, size=5000)]
    f = describe(values)
    assert f.kind == "text"
    thresholds = calibrate_thresholds(f, values, 1000, rng=r)
    assert set(thresholds) == {"psi", "calibration_rows"}


class TestProfileBuilder:
    def test_every_feature_and_the_prediction_are_calibrated(self) -> None:
        columns, dtypes = training_columns(5000, seed=1)
        profile = build(columns, dtypes, prediction="score")
        for f in profile.features:
            assert f.drift_thresholds["calibration_rows"] == 5000
        assert profile.prediction is not None
        assert profile.prediction.distribution.drift_thresholds["calibration_rows"] == 5000
        again = build(columns, dtypes, prediction="score")
        assert [f.drift_thresholds for f in again.features] == [
            f.drift_thresholds for f in profile.features
        ]

    def test_calibration_can_be_turned_off(self) -> None:
        columns, dtypes = training_columns(2000, seed=2)
        profile = build(columns, dtypes, calibrate=False, prediction="score")
        assert all(f.drift_thresholds == {} for f in profile.features)

    def test_options(self) -> None:
        options = BuildOptions()
        assert (options.calibration_rows, options.calibration_bootstraps) == (5000, 200)
        assert options.calibration_quantile == 0.99
        with pytest.raises(ValidationError):
            BuildOptions(calibration_rows=-1)
        with pytest.raises(ValidationError):
            BuildOptions(calibration_quantile=1.0)

    def test_building_a_profile_does_not_load_scipy(self) -> None:
        code = "import sys; import app.monitoring.profile_builder; print('scipy' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "False"
