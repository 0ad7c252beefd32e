"""Statistical power and false alarms of the default detectors, at the MINIMUM window size,
with ten features tested together (so the correction bites), seeded; plus the cycle-time and
build-time budgets.

Power: in >= 90 % of 300 trials each default detector catches its shift — KS a 0.5-std mean
shift, chi-squared a 10-point share change (0.5 -> 0.6, 2 and 4 categories; a boolean 0.3 -> 0.4),
the missing-share test a 10-point jump (5 % -> 15 %). False alarms: on 4,000 windows drawn from
the training distributions, the share of cycles in which ANY feature of the model drifts stays
under alpha by a one-sided 95 % binomial bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats

from app.monitoring.drift import evaluate
from app.monitoring.drift_types import DriftConfig, FeatureSample, ModelSnapshot
from app.monitoring.profile import ModelInfo, Profile
from app.monitoring.profile_builder import build_profile
from tests.unit.monitoring.test_drift import binned_sample, feature_of, numeric_sample

pytestmark = pytest.mark.slow

CONFIG = DriftConfig()
N = CONFIG.min_rows
N_TRAIN = 20000
N_REFERENCES = 4
POWER_TRIALS = 300
NULL_TRIALS = 4000

Draw = Callable[[np.random.Generator, int], np.ndarray[Any, Any]]
NUMERIC: dict[str, tuple[Draw, float]] = {
    # name: (draw, std) — the shifted ones move by half their std
    "normal": (lambda r, n: r.normal(0.0, 1.0, n), 1.0),
    "lognormal": (lambda r, n: r.lognormal(0.0, 0.5, n), float(np.sqrt((np.e**0.25 - 1) * np.e**0.25))),
    "uniform": (lambda r, n: r.uniform(0.0, 1.0, n), float(np.sqrt(1 / 12))),
    "exponential": (lambda r, n: r.exponential(2.0, n), 2.0),
    "counts": (lambda r, n: r.poisson(3.0, n).astype(float), float(np.sqrt(3.0))),
}  # fmt: skip
SHIFTED_NUMERIC = ("normal", "lognormal")
CATEGORICAL: dict[str, dict[str, float]] = {
    "two": {"a": 0.5, "b": 0.5},
    "four": {"a": 0.5, "b": 0.2, "c": 0.2, "d": 0.1},
    "three": {"x": 0.6, "y": 0.3, "z": 0.1},
}
SHIFTED_CATEGORICAL = {
    "two": {"a": 0.6, "b": 0.4},
    "four": {"a": 0.6, "b": 0.16, "c": 0.16, "d": 0.08},
}
FLAG_TRUE = (0.3, 0.4)
MISSING = (0.05, 0.15)  # the "gappy" feature: normal values, some missing
DETECTORS = {
    "normal": "ks",
    "lognormal": "ks",
    "two": "chi2",
    "four": "chi2",
    "flag": "chi2",
    "gappy": "missing",
}


def training(seed: int) -> Profile:
    r = np.random.default_rng(seed)
    columns: dict[str, Any] = {name: draw(r, N_TRAIN) for name, (draw, _) in NUMERIC.items()}
    gappy: list[float | None] = r.normal(0.0, 1.0, N_TRAIN).tolist()
    for i in np.flatnonzero(r.random(N_TRAIN) < MISSING[0]):
        gappy[i] = None
    columns["gappy"] = gappy
    for name, shares in CATEGORICAL.items():
        columns[name] = r.choice(list(shares), p=list(shares.values()), size=N_TRAIN).tolist()
    columns["flag"] = (r.random(N_TRAIN) < FLAG_TRUE[0]).tolist()
    columns["y"] = np.zeros(N_TRAIN, dtype=np.int64)
    dtypes = dict.fromkeys([*NUMERIC, "gappy"], "float64")
    dtypes |= {"flag": "bool", "y": "int64"} | dict.fromkeys(CATEGORICAL, "object")
    profile, _ = build_profile(
        columns, dtypes, target="y", model=ModelInfo(name="m"), data_hash="sha256:power"
    )
    assert len(profile.features) == 10
    return profile


@pytest.fixture(scope="module")
def references() -> list[Profile]:
    return [training(seed) for seed in range(N_REFERENCES)]


def snapshot(profile: Profile, r: np.random.Generator, shifted: bool) -> ModelSnapshot:
    samples: list[FeatureSample] = []
    for name, (draw, std) in NUMERIC.items():
        shift = 0.5 * std if shifted and name in SHIFTED_NUMERIC else 0.0
        samples.append(numeric_sample(name, draw(r, N) + shift))
    missing_share = MISSING[1] if shifted else MISSING[0]
    n_missing = int(r.binomial(N, missing_share))
    samples.append(numeric_sample("gappy", r.normal(0.0, 1.0, N - n_missing), n_missing))
    for name, shares in CATEGORICAL.items():
        p = SHIFTED_CATEGORICAL.get(name, shares) if shifted else shares
        counts = r.multinomial(N, list(p.values()))
        by_label = dict(zip(p, counts.tolist(), strict=True))
        samples.append(binned_sample(feature_of(profile, name), by_label))
    n_true = int(r.binomial(N, FLAG_TRUE[1] if shifted else FLAG_TRUE[0]))
    flag = binned_sample(feature_of(profile, "flag"), {"true": n_true, "false": N - n_true})
    return ModelSnapshot("m", 0.0, (*samples, flag))


def test_each_default_detector_catches_its_shift_at_the_minimum_window(
    references: list[Profile],
) -> None:
    r = np.random.default_rng(2024)
    caught = dict.fromkeys(DETECTORS, 0)
    for trial in range(POWER_TRIALS):
        profile = references[trial % N_REFERENCES]
        report = evaluate(profile, snapshot(profile, r, shifted=True), CONFIG)
        for fd in report.features:
            if fd.feature in DETECTORS:
                assert fd.n_rows == N
                detector = next(t for t in fd.tests if t.test == DETECTORS[fd.feature])
                assert detector.decides
                caught[fd.feature] += bool(detector.drift and fd.drift)
    rates = {name: c / POWER_TRIALS for name, c in caught.items()}
    print(f"\npower at n={N} ({POWER_TRIALS} trials): {rates}")
    assert min(rates.values()) >= 0.9, rates


def test_false_alarms_per_cycle_stay_under_alpha(references: list[Profile]) -> None:
    r = np.random.default_rng(7)
    alarms = 0
    for trial in range(NULL_TRIALS):
        profile = references[trial % N_REFERENCES]
        report = evaluate(profile, snapshot(profile, r, shifted=False), CONFIG)
        alarms += any(fd.drift for fd in report.features)
    bound = stats.binomtest(alarms, NULL_TRIALS, CONFIG.alpha, alternative="less")
    upper = bound.proportion_ci(confidence_level=0.95).high
    rate = alarms / NULL_TRIALS
    print(
        f"\nfalse alarms at n={N}: {alarms}/{NULL_TRIALS} cycles = {rate:.4f} "
        f"(95 % upper bound {upper:.4f}); at one cycle a minute <= {upper * 1440:.1f} per day"
    )
    assert upper < CONFIG.alpha


def test_a_cycle_of_50_numeric_features_by_5000_values_is_fast() -> None:
    r = np.random.default_rng(0)
    n_train = 50000
    columns: dict[str, Any] = {f"f{i}": r.normal(size=n_train) for i in range(50)}
    columns["y"] = np.zeros(n_train, dtype=np.int64)
    dtypes = dict.fromkeys(columns, "float64") | {"y": "int64"}
    profile, _ = build_profile(
        columns, dtypes, target="y", model=ModelInfo(name="m"), data_hash="sha256:bench"
    )
    samples = tuple(
        numeric_sample(f"f{i}", r.normal(0.5 if i < 5 else 0.0, 1.0, 5000)) for i in range(50)
    )
    snap = ModelSnapshot("m", 0.0, samples)
    evaluate(profile, snap, CONFIG)  # warm caches and scipy
    times = []
    for _ in range(7):
        started = time.perf_counter()
        report = evaluate(profile, snap, CONFIG)
        times.append(time.perf_counter() - started)
    print(
        f"\ncycle 50 x 5000: min {min(times) * 1e3:.0f} ms, median {np.median(times) * 1e3:.0f} ms"
    )
    assert [fd.drift for fd in report.features] == [True] * 5 + [False] * 45
    assert min(times) < 0.25


def test_building_a_calibrated_profile_of_10_features_by_50k_rows_is_fast() -> None:
    r = np.random.default_rng(1)
    n = 50000
    columns: dict[str, Any] = {f"x{i}": r.normal(size=n) for i in range(7)}
    columns["c"] = r.choice(["a", "b", "c", "d"], size=n).tolist()
    columns["flag"] = (r.random(n) < 0.3).tolist()
    columns["gappy"] = [None if i % 20 == 0 else float(v) for i, v in enumerate(r.normal(size=n))]
    columns["y"] = np.zeros(n, dtype=np.int64)
    dtypes = dict.fromkeys([f"x{i}" for i in range(7)], "float64")
    dtypes |= {"c": "object", "flag": "bool", "gappy": "float64", "y": "int64"}
    started = time.perf_counter()
    profile, _ = build_profile(
        columns, dtypes, target="y", model=ModelInfo(name="m"), data_hash="sha256:build"
    )
    took = time.perf_counter() - started
    print(f"\nprofile build 10 x 50k with calibration: {took:.2f} s")
    assert all(f.drift_thresholds for f in profile.features)
    assert took < 2.0
