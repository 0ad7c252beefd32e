"""The registry of drift tests: what each measures, on which kinds, and which way means drift.

Every function here is pure: arrays or counts in, floats out. Distances need only numpy (the
profile builder calibrates them without loading scipy); tests with a p-value import scipy when
first called (the drift worker loads it once, up front).

Defaults (`REGISTRY`; `DriftConfig.effect_floors` overrides a floor, a feature's calibrated
`drift_thresholds` override a distance threshold):

| test | kinds | statistic (effect) | p | default threshold | drift | role |
|---|---|---|---|---|---|---|
| `ks` | num | KS D vs the 1,001 quantiles (D) | yes | D >= 0.1 | above | decides |
| `wasserstein` | num | W1 / reference std | no | 0.1 | above | informs |
| `psi` | all | population stability index | no | 0.2 | above | informs |
| `js` | num, cat, bool | Jensen-Shannon distance, base 2 | no | 0.1 | above | informs |
| `welch_t` | num | Welch t (abs mean shift / std) | yes | 0.2 | above | informs |
| `mann_whitney` | num | U (abs(U / (n1 n2) - 0.5)) | yes | 0.05 | above | informs |
| `anova` | num | F, reference + 3 chunks (eta^2) | yes | corrected level | below | informs |
| `kruskal` | num | H, same groups (epsilon^2) | yes | corrected level | below | informs |
| `chi2` | cat, bool, text | chi-squared homogeneity (L-inf) | yes | >= 0.05 | above | decides |
| `linf` | cat, bool | max abs share difference | no | 0.1 | above | informs |
| `missing` | all | two-proportion z (abs change) | yes | >= 0.02 | above | decides |
| `oov` | text | two-proportion z, OOV tokens | yes | >= 0.05 | above | decides |

A test that decides flags drift when its corrected p-value is at most alpha AND its effect
reaches the floor; a feature drifts when any of its deciding tests does. Tests that inform use
the same per-test level the correction leaves (alpha/m for Bonferroni), distances their
threshold. Text `chi2`/`psi` run on the profile's word-count bins; categorical/boolean ones on
the value bins with the `__unseen__` column and without `__missing__` (tested by `missing`).

Smoothing (PSI only): bins empty on both sides are dropped; every remaining bin gets half a
count on each side, p_i = (c_i + 0.5) / (n + 0.5 k), so an empty bin gives a large but finite
term whose size depends on the sample sizes (Jeffreys prior), never on an arbitrary epsilon.
p-values are kept in [2.2e-308, 1]: a tail too far out for float64 reads as the smallest
normal double, never as 0 or NaN; an infinite statistic (two different constants) as the
largest double. Constant features never divide by zero: distances normalised by the reference
std fall back to the window's std, then abs(mean), then 1.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.monitoring.profile import Kind, NumericFeature

Direction = Literal["above", "below"]
ThresholdKind = Literal["effect_floor", "distance", "significance"]
Array = np.ndarray[Any, Any]

P_MIN = sys.float_info.min
F_MAX = sys.float_info.max
"""Stands for an infinite statistic (a constant sample against a different constant), so every
number in a report stays finite (JSON has no infinity)."""
_ALL: frozenset[Kind] = frozenset({"numeric", "categorical", "boolean", "text"})
_BINNED: frozenset[Kind] = frozenset({"categorical", "boolean"})
_NUMERIC: frozenset[Kind] = frozenset({"numeric"})


@dataclass(frozen=True, slots=True)
class StatTest:
    """One registered test: what it computes and how its score is judged."""

    name: str
    kinds: frozenset[Kind]
    statistic: str
    has_p_value: bool
    default_threshold: float
    """Effect floor, distance threshold, or (significance tests) the nominal level."""
    threshold_kind: ThresholdKind
    direction: Direction
    """Drift when the judged score (effect or distance; p-value for significance tests) is
    above / below the threshold."""
    decides_for: frozenset[Kind]
    """Kinds for which this test's verdict is the feature's; for the others it only informs."""
    null_exponent: float = 0.0
    """Distances: the null value shrinks like n**-exponent with the window size n (used to
    carry a threshold calibrated at one window size to a smaller window)."""

    def decides(self, kind: Kind) -> bool:
        return kind in self.decides_for


_NONE: frozenset[Kind] = frozenset()
_TEXT: frozenset[Kind] = frozenset({"text"})
_COUNTED = _BINNED | _TEXT

REGISTRY: dict[str, StatTest] = {
    t.name: t
    for t in (
        StatTest("ks", _NUMERIC, "KS D", True, 0.1, "effect_floor", "above", _NUMERIC),
        StatTest("wasserstein", _NUMERIC, "W1 / std", False, 0.1, "distance", "above", _NONE, 0.5),
        StatTest("psi", _ALL, "PSI (smoothed)", False, 0.2, "distance", "above", _NONE, 1.0),
        StatTest(
            "js", _NUMERIC | _BINNED, "JS distance", False, 0.1, "distance", "above", _NONE, 0.5
        ),
        StatTest("welch_t", _NUMERIC, "Welch t", True, 0.2, "effect_floor", "above", _NONE),
        StatTest("mann_whitney", _NUMERIC, "U", True, 0.05, "effect_floor", "above", _NONE),
        StatTest("anova", _NUMERIC, "F", True, 0.01, "significance", "below", _NONE),
        StatTest("kruskal", _NUMERIC, "H", True, 0.01, "significance", "below", _NONE),
        StatTest("chi2", _COUNTED, "chi-squared", True, 0.05, "effect_floor", "above", _COUNTED),
        StatTest("linf", _BINNED, "L-inf", False, 0.1, "distance", "above", _NONE, 0.5),
        StatTest("missing", _ALL, "z (missing share)", True, 0.02, "effect_floor", "above", _ALL),
        StatTest("oov", _TEXT, "z (OOV token rate)", True, 0.05, "effect_floor", "above", _TEXT),
    )
}
"""Every test, by name (the `method`/`test` label of the drift metrics)."""


def registered_for(kind: Kind) -> tuple[StatTest, ...]:
    """The registered tests that accept a feature kind, in registry order."""
    return tuple(t for t in REGISTRY.values() if kind in t.kinds)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one test computed (before any threshold or correction)."""

    statistic: float
    p_value: float | None
    effect: float
    testable: bool = True
    """False when the margins leave nothing to test (one category, no missing value on either
    side): such a test cannot reject, so it is left out of the multiple-testing count."""


def clip_p(p: float) -> float:
    """A p-value in [P_MIN, 1]; NaN (no evidence computable) reads as 1."""
    if p != p:
        return 1.0
    return min(1.0, max(P_MIN, float(p)))


# --- numeric: distribution distances and KS ---------------------------------------------------


def reference_sample(feature: NumericFeature) -> Array:
    """The reference as a sorted, equally weighted sample: the raw reservoir when the profile
    kept one, else its 1,001 quantiles."""
    values = feature.sample if feature.sample else feature.quantiles_1001
    return np.sort(np.asarray(values, dtype=np.float64))


def scale_of(reference_std: float, window_std: float = 0.0, reference_mean: float = 0.0) -> float:
    """What normalises a numeric distance: the reference std; for a constant reference the
    window's std, else abs(reference mean), else 1 (so a constant feature never divides by 0)."""
    for candidate in (reference_std, window_std, abs(reference_mean)):
        if candidate > 0 and math.isfinite(candidate):
            return candidate
    return 1.0


def _interpolate(x: Array, q: Array, k: Array) -> Array:
    # k = number of quantiles at or below x (right limit) or strictly below it (left limit).
    m = q.size
    j = np.clip(k - 1, 0, m - 2)
    lo, width = q[j], q[j + 1] - q[j]
    frac = np.divide(x - lo, width, out=np.zeros(np.shape(x)), where=width > 0)
    return np.where(k == 0, 0.0, np.where(k >= m, 1.0, (j + frac) / (m - 1)))


def quantile_cdf(x: Array, quantiles: Array, *, left: bool = False) -> Array:
    """The reference CDF at x: piecewise-linear interpolation of the quantile function.

    Args:
        x: points to evaluate.
        quantiles: non-decreasing values at probabilities 0, 1/(m-1), …, 1.
        left: the left limit F(x-) instead of F(x) (they differ where quantiles tie).
    """
    q = np.asarray(quantiles, dtype=np.float64)
    return _interpolate(x, q, np.searchsorted(q, x, side="left" if left else "right"))


def _counts_below(u: Array, q: Array, side: Literal["left", "right"]) -> Array:
    """For sorted distinct u: how many q are <= u (side "right") or < u (side "left"), from m
    searches into u instead of n searches into q."""
    other: Literal["left", "right"] = "left" if side == "right" else "right"
    pos = np.searchsorted(u, q, side=other)
    return np.cumsum(np.bincount(pos, minlength=u.size + 1))[: u.size]


def _run_starts(sorted_values: Array) -> Array:
    """Index of the first element of every run of equal values in a sorted array."""
    change = np.empty(sorted_values.size, dtype=bool)
    change[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    return np.flatnonzero(change)


def ks_statistic(window_sorted: Array, quantiles: Array) -> float:
    """sup |F_window - F_ref|, checked on both sides of every jump of the window's ECDF."""
    x = window_sorted
    n = x.size
    if n == 0:
        return 0.0
    starts = _run_starts(x)
    u = x[starts]
    g_left = starts / n
    g_right = np.append(starts[1:], n) / n
    q = np.asarray(quantiles, dtype=np.float64)
    d_right = np.abs(g_right - _interpolate(u, q, _counts_below(u, q, "right")))
    d_left = np.abs(g_left - _interpolate(u, q, _counts_below(u, q, "left")))
    return float(max(d_right.max(), d_left.max()))


KS_EXACT_MAX_N = 1000
"""Up to this effective size the KS p-value comes from scipy's `kstwo` (exact for one sample of
that size, as `ks_2samp(method="asymp")`); beyond it from the Kolmogorov limit with Stephens'
small-sample correction, within a few per cent of `kstwo` down to p ~ 1e-20 at a microsecond
instead of milliseconds."""


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sample asymptotic p-value of D at the effective size n*m/(n+m)."""
    from scipy import special, stats

    n_eff = max(1, round(n * m / (n + m)))
    if n_eff <= KS_EXACT_MAX_N:
        return clip_p(float(stats.kstwo.sf(d, n_eff)))
    root = math.sqrt(n_eff)
    return clip_p(float(special.kolmogorov((root + 0.12 + 0.11 / root) * d)))


def ks_test(window_sorted: Array, quantiles: Array, reference_n: int) -> Outcome:
    """KS of a sorted window against a reference of `reference_n` rows given by its quantiles."""
    d = ks_statistic(window_sorted, quantiles)
    return Outcome(d, ks_pvalue(d, window_sorted.size, max(1, reference_n)), d)


@functools.lru_cache(maxsize=32)
def _w1_grid(n: int, m: int) -> tuple[Array, Array, Array]:
    # Breakpoints of both step quantile functions, in units of 1/(n m) (exact integers); on
    # each piece between them both quantile functions are constant.
    cuts = np.unique(
        np.concatenate((np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1) * n))
    )
    prev = np.concatenate(([0], cuts[:-1]))
    return prev // m, prev // n, (cuts - prev) / (n * m)


def wasserstein_1(a_sorted: Array, b_sorted: Array) -> Array:
    """W1 between equally weighted samples, from their quantile functions; `a_sorted` may be
    2-D (one sorted sample per row, all of one size) and then one distance per row comes back."""
    n, m = a_sorted.shape[-1], b_sorted.size
    if n == 0 or m == 0:
        return np.zeros(a_sorted.shape[:-1])
    ia, ib, dt = _w1_grid(n, m)
    return np.asarray(np.abs(a_sorted[..., ia] - b_sorted[ib]) @ dt)


def bin_counts(values: Array, edges: Sequence[float] | Array, *, is_sorted: bool = False) -> Array:
    """Counts per profile bin: bin i holds edges[i-1] < x <= edges[i] (outer bins open)."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    if is_sorted:
        upto = np.searchsorted(values, edges_arr, side="right")
        return np.diff(np.concatenate(([0], upto, [values.size])))
    idx = np.searchsorted(edges_arr, values, side="left")
    return np.bincount(idx, minlength=edges_arr.size + 1)


def _shares(counts: Array) -> Array:
    total = counts.sum(axis=-1, keepdims=True)
    out: Array = np.divide(counts, total, out=np.zeros(counts.shape), where=total > 0)
    return out


def psi(window_counts: Array, reference_shares: Array, reference_n: float) -> Array:
    """Population stability index, smoothed (module docstring); rows of 2-D counts each give one
    value. Symmetric: sum of (p - q) ln(p / q)."""
    w = np.asarray(window_counts, dtype=np.float64)
    r = np.broadcast_to(_shares(np.asarray(reference_shares, np.float64)) * reference_n, w.shape)
    keep = (w > 0) | (r > 0)
    k = keep.sum(axis=-1, keepdims=True)
    p = (w + 0.5) / (w.sum(axis=-1, keepdims=True) + 0.5 * k)
    q = (r + 0.5) / (r.sum(axis=-1, keepdims=True) + 0.5 * k)
    terms = np.where(keep, (p - q) * np.log(p / q), 0.0)
    return np.asarray(terms.sum(axis=-1))


def js_distance(window_counts: Array, reference_shares: Array) -> Array:
    """Jensen-Shannon distance in base 2 (0 … 1) between the window's and the reference shares."""
    p = _shares(np.asarray(window_counts, dtype=np.float64))
    q = np.broadcast_to(_shares(np.asarray(reference_shares, dtype=np.float64)), p.shape)
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / mid), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log(q / mid), 0.0).sum(axis=-1)
    return np.asarray(np.sqrt(np.maximum(0.0, (kl_p + kl_q) / (2 * math.log(2)))))


def linf(window_counts: Array, reference_shares: Array) -> Array:
    """Largest absolute difference between the window's and the reference shares."""
    p = _shares(np.asarray(window_counts, dtype=np.float64))
    q = _shares(np.asarray(reference_shares, dtype=np.float64))
    return np.asarray(np.abs(p - q).max(axis=-1, initial=0.0))


# --- numeric: tests on location ---------------------------------------------------------------


def welch_t(
    mean1: float, std1: float, n1: int, mean2: float, std2: float, n2: int
) -> tuple[float, float]:
    """Welch's t and two-sided p from summary statistics (sample stds, ddof=1)."""
    from scipy import special

    v1, v2 = std1 * std1 / n1, std2 * std2 / n2
    diff = mean1 - mean2
    if v1 + v2 <= 0:  # both samples constant: certain equality or certain difference
        return (0.0, 1.0) if diff == 0 else (math.copysign(F_MAX, diff), P_MIN)
    t = diff / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 * v1 / max(n1 - 1, 1) + v2 * v2 / max(n2 - 1, 1))
    return t, clip_p(2 * float(special.stdtr(df, -abs(t))))


def _rank_sums(
    reference_sorted: Array, window_sorted: Array, chunks: Sequence[Array]
) -> tuple[float, Array, float, int]:
    """Average-rank sums of the reference and of each chunk of the window within the pooled
    values, and sum(t^3 - t) over ties — from one merge of the two sorted samples."""
    pooled = np.sort(np.concatenate((reference_sorted, window_sorted)), kind="stable")
    n = pooled.size
    starts = _run_starts(pooled)
    sizes = np.diff(np.append(starts, n))
    ties = float(np.sum(sizes.astype(np.float64) ** 3 - sizes))

    def rank_sum(values: Array) -> float:
        ordered = np.sort(values)  # sorted queries: cache-friendly searches
        below = np.searchsorted(pooled, ordered, side="left")
        upto = np.searchsorted(pooled, ordered, side="right")
        return float(np.sum(below + upto + 1)) / 2.0

    chunk_sums = np.array([rank_sum(c) for c in chunks])
    reference_sum = n * (n + 1) / 2.0 - float(chunk_sums.sum())
    return reference_sum, chunk_sums, ties, n


def rank_tests(
    reference: Array, chunks: Sequence[Array], window_sorted: Array | None = None
) -> tuple[Outcome, Outcome]:
    """Mann-Whitney U (window = all chunks vs reference) and Kruskal-Wallis H (reference and
    each chunk as groups) from one pooled ranking. Matches scipy's `mannwhitneyu` (asymptotic,
    continuity correction) and `kruskal` (tie-corrected).

    Args:
        reference: the reference sample, sorted.
        chunks: the window cut into consecutive chunks (arrival order).
        window_sorted: the whole window sorted, when the caller has it already.
    """
    from scipy import special

    window_sorted = np.sort(np.concatenate(chunks)) if window_sorted is None else window_sorted
    reference_sum, chunk_sums, ties, n = _rank_sums(reference, window_sorted, chunks)
    sums = np.concatenate(([reference_sum], chunk_sums))
    groups = [reference, *chunks]
    n2 = reference.size
    n1 = n - n2
    u1 = float(chunk_sums.sum()) - n1 * (n1 + 1) / 2
    tie_factor = 1.0 - ties / (n**3 - n) if n > 1 else 0.0
    sd = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))) if n > 1 else 0.0
    effect = abs(u1 / (n1 * n2) - 0.5) if n1 and n2 else 0.0
    if sd > 0:
        z = (max(u1, n1 * n2 - u1) - n1 * n2 / 2 - 0.5) / sd
        mw = Outcome(u1, clip_p(2 * float(special.ndtr(-z))), effect)
    else:
        mw = Outcome(u1, 1.0, effect, testable=False)
    sizes = np.array([g.size for g in groups], dtype=np.float64)
    if tie_factor <= 0 or (sizes > 0).sum() < 2:
        return mw, Outcome(0.0, 1.0, 0.0, testable=False)
    nonempty = sizes > 0
    h = 12.0 / (n * (n + 1)) * float(np.sum(sums[nonempty] ** 2 / sizes[nonempty])) - 3 * (n + 1)
    h /= tie_factor
    k = int(nonempty.sum())
    kw = Outcome(h, clip_p(float(special.chdtrc(k - 1, h))), max(0.0, h / (n - 1)))
    return mw, kw


def one_way_anova(groups: Sequence[Array]) -> Outcome:
    """One-way ANOVA F and p (as scipy's `f_oneway`); effect eta squared = SSB / SST."""
    from scipy import special

    groups = [g for g in groups if g.size]
    k = len(groups)
    n = sum(g.size for g in groups)
    if k < 2 or n <= k:
        return Outcome(0.0, 1.0, 0.0, testable=False)
    means = np.array([g.mean() for g in groups])
    sizes = np.array([g.size for g in groups], dtype=np.float64)
    grand = float(sizes @ means) / n
    ssb = float(sizes @ (means - grand) ** 2)
    ssw = float(sum(np.sum((g - mu) ** 2) for g, mu in zip(groups, means, strict=True)))
    sst = ssb + ssw
    if ssw <= 0:
        return Outcome(0.0, 1.0, 0.0, testable=False) if ssb <= 0 else Outcome(F_MAX, P_MIN, 1.0)
    f = (ssb / (k - 1)) / (ssw / (n - k))
    return Outcome(f, clip_p(float(special.fdtrc(k - 1, n - k, f))), ssb / sst)


# --- counts: homogeneity and proportions ------------------------------------------------------


def chi2_homogeneity(window_counts: Array, reference_counts: Array) -> Outcome:
    """Chi-squared test of homogeneity on the 2 x k table (window, reference), as
    `scipy.stats.chi2_contingency(table, correction=False)`. Columns empty in both rows are
    dropped, so an unseen category (reference 0, window > 0) adds evidence, never p = 0/NaN.
    Effect: L-inf distance between the two share vectors."""
    from scipy import special

    w = np.asarray(window_counts, dtype=np.float64)
    r = np.asarray(reference_counts, dtype=np.float64)
    effect = float(linf(w, r))
    keep = (w > 0) | (r > 0)
    table = np.vstack([w[keep], r[keep]])
    rows = table.sum(axis=1)
    k = table.shape[1]
    if k < 2 or rows.min() <= 0:
        return Outcome(0.0, 1.0, effect, testable=False)
    expected = np.outer(rows, table.sum(axis=0)) / rows.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return Outcome(stat, clip_p(float(special.chdtrc(k - 1, stat))), effect)


def two_proportion(x1: float, n1: int, share2: float, n2: int) -> Outcome:
    """Two-sided test of x1/n1 against a reference share over n2 rows: the pooled z-test, or
    Fisher's exact test (reference count rounded) when an expected count is below 5.
    Statistic z; effect abs(x1/n1 - share2)."""
    from scipy import special, stats

    if n1 <= 0 or n2 <= 0:
        return Outcome(0.0, 1.0, 0.0, testable=False)
    p1 = x1 / n1
    x2 = share2 * n2
    effect = abs(p1 - share2)
    pooled = (x1 + x2) / (n1 + n2)
    if pooled <= 0.0 or pooled >= 1.0:
        return Outcome(0.0, 1.0, effect, testable=False)
    z = (p1 - share2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if min(n1, n2) * min(pooled, 1 - pooled) < 5:
        r2 = round(x2)
        table = [[round(x1), n1 - round(x1)], [r2, n2 - r2]]
        return Outcome(z, clip_p(float(stats.fisher_exact(table).pvalue)), effect)
    return Outcome(z, clip_p(2 * float(special.ndtr(-abs(z)))), effect)


def oov_counts(token_lists: Iterable[Sequence[str]], vocabulary: frozenset[str]) -> tuple[int, int]:
    """(tokens outside the vocabulary, all tokens)."""
    oov = total = 0
    for toks in token_lists:
        total += len(toks)
        oov += sum(1 for t in toks if t not in vocabulary)
    return oov, total


# --- multiple testing -------------------------------------------------------------------------


def adjust(
    p_values: Sequence[float], alpha: float, method: Literal["bonferroni", "bh", "none"]
) -> tuple[Array, float]:
    """Adjusted p-values (reject where <= alpha) and the per-test level they amount to.

    Bonferroni: min(1, m p), level alpha/m. Benjamini-Hochberg: step-up adjusted p-values, level
    k* alpha/m for the largest k* with p_(k*) <= k* alpha/m (alpha/m when nothing is rejected).
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0 or method == "none":
        return p.copy(), alpha
    if method == "bonferroni":
        return np.minimum(1.0, p * m), alpha / m
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    passing = np.flatnonzero(p[order] <= np.arange(1, m + 1) * alpha / m)
    k_star = int(passing[-1]) + 1 if passing.size else 1
    return adjusted, k_star * alpha / m
