"""Per-feature thresholds for the distance scores, calibrated on the training data.

A fixed PSI of 0.2 means something different for a 2-category feature and a 12-category one,
and for a 500-row window and a 5,000-row one. So when the profile is built, windows of the
serving window size are bootstrapped (drawn with replacement) from the training values, each is
scored against the reference exactly as the drift cycle scores a serving window, and the
`quantile` (0.99) of each score's null distribution becomes that feature's threshold. The
bootstrap compares windows with the very data they are drawn from, while a serving window also
meets the training sample's own error (variance 1/n + 1/N instead of 1/n), so each quantile is
widened by (1 + n/N) to the score's null exponent (PSI 1, the others 1/2). A stable feature then
crosses its thresholds in about 1-3 % of windows (measured over training sets; the 0.99 quantile
of 200 bootstraps is itself noisy). numpy only (no scipy at build time).

Bins are bootstrapped from their multinomial (the same distribution as resampling the values
and binning them, at a fraction of the cost); Wasserstein from resampled values. Windows count
rows: missing values take their training share of each window and are left out of the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.monitoring.feature_checks import compile_feature
from app.monitoring.profile import (
    BooleanFeature,
    CategoricalFeature,
    Feature,
    NumericFeature,
    TextFeature,
)
from app.monitoring.stattests import (
    REGISTRY,
    Array,
    js_distance,
    linf,
    psi,
    reference_sample,
    scale_of,
    wasserstein_1,
)
from app.monitoring.values import is_missing, token_count


def _quantiles(
    scores: dict[str, Array], quantile: float, rows: int, reference_rows: float
) -> dict[str, float]:
    # A bootstrap window differs from the training data only by its own sampling error; a
    # serving window also meets the training data's (variance 1/n + 1/N instead of 1/n).
    widen = 1.0 + rows / max(reference_rows, 1.0)
    return {
        name: float(np.quantile(s, quantile)) * widen ** REGISTRY[name].null_exponent
        for name, s in scores.items()
    }


def _numeric(
    feature: NumericFeature, values: Sequence[Any], rows: int, n_boot: int, rng: np.random.Generator
) -> tuple[dict[str, Array], float]:
    try:  # None becomes NaN
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.asarray([float(v) for v in values if not is_missing(v)], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {}, 0.0
    n = max(1, round(rows * (1.0 - feature.missing_ratio)))
    windows = np.sort(arr[rng.integers(0, arr.size, size=(n_boot, n))], axis=1)
    ref = reference_sample(feature)
    w1 = wasserstein_1(windows, ref) / scale_of(feature.std, 0.0, feature.mean)
    ratios = np.asarray(feature.bin_ratios, dtype=np.float64)
    counts = rng.multinomial(n, ratios / ratios.sum(), size=n_boot)
    scores = {
        "wasserstein": w1,
        "psi": psi(counts, ratios, arr.size),
        "js": js_distance(counts, ratios),
    }
    return scores, float(arr.size)


def _binned(
    feature: CategoricalFeature | BooleanFeature,
    values: Sequence[Any],
    rows: int,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[dict[str, Array], float]:
    check = compile_feature(feature)
    tally = np.asarray(check.check_vectorized(list(values)).bin_counts, dtype=np.float64)
    keep = np.arange(tally.size) != check.missing_bin
    n_ref = float(tally[keep].sum())
    if n_ref <= 0:
        return {}, 0.0
    drawn = rng.multinomial(rows, tally / tally.sum(), size=n_boot)
    counts = drawn[:, keep]
    ratios = np.asarray(check.reference_ratios, dtype=np.float64)[keep]
    scores = {
        "psi": psi(counts, ratios, n_ref),
        "js": js_distance(counts, ratios),
        "linf": linf(counts, ratios),
    }
    return scores, n_ref


def _text(
    feature: TextFeature, values: Sequence[Any], rows: int, n_boot: int, rng: np.random.Generator
) -> tuple[dict[str, Array], float]:
    lengths = [token_count(str(v)) for v in values if not is_missing(v)]
    n_missing = len(values) - len(lengths)
    edges = np.asarray(feature.bin_edges, dtype=np.float64)
    idx = np.searchsorted(edges, np.asarray(lengths, dtype=np.float64), side="left")
    tally = np.append(np.bincount(idx, minlength=edges.size + 1), n_missing).astype(np.float64)
    if not lengths:
        return {}, 0.0
    counts = rng.multinomial(rows, tally / tally.sum(), size=n_boot)[:, :-1]
    ratios = np.asarray(feature.bin_ratios, dtype=np.float64)
    return {"psi": psi(counts, ratios, float(len(lengths)))}, float(len(lengths))


def calibrate_thresholds(
    feature: Feature,
    values: Sequence[Any],
    window_rows: int,
    n_boot: int = 200,
    quantile: float = 0.99,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Null-distribution thresholds of the distance scores of one feature.

    Args:
        feature: the feature as profiled from `values`.
        values: the training values of that feature (missing ones included).
        window_rows: rows per bootstrap window (the serving window size).
        n_boot: bootstrap windows.
        quantile: the quantile of each score's null distribution kept as its threshold.
        rng: the random generator (seeded for reproducible profiles).

    Returns:
        Score name (psi, js, wasserstein, linf as the kind has them) → threshold, plus
        `calibration_rows`; empty when there is nothing to calibrate on (no present value).
    """
    if window_rows <= 0 or n_boot <= 0:
        return {}
    rng = rng or np.random.default_rng(0)
    if isinstance(feature, NumericFeature):
        scores, n_ref = _numeric(feature, values, window_rows, n_boot, rng)
    elif isinstance(feature, TextFeature):
        scores, n_ref = _text(feature, values, window_rows, n_boot, rng)
    else:
        scores, n_ref = _binned(feature, values, window_rows, n_boot, rng)
    if not scores:
        return {}
    thresholds = _quantiles(scores, quantile, window_rows, n_ref)
    return {**thresholds, "calibration_rows": float(window_rows)}
