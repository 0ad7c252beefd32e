"""Every statistic of the test registry cross-checked against scipy (or a hand computation) on
the same arrays, plus the traps: unseen categories, empty cells, ties, constants."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from app.monitoring.stattests import (
    F_MAX,
    KS_EXACT_MAX_N,
    P_MIN,
    REGISTRY,
    adjust,
    bin_counts,
    chi2_homogeneity,
    clip_p,
    js_distance,
    ks_pvalue,
    ks_statistic,
    ks_test,
    linf,
    one_way_anova,
    oov_counts,
    psi,
    quantile_cdf,
    rank_tests,
    registered_for,
    scale_of,
    two_proportion,
    wasserstein_1,
    welch_t,
)

EXACT = 1e-9


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def quantiles_of(sample: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.quantile(sample, np.linspace(0.0, 1.0, 1001))


# --- the registry ------------------------------------------------------------------------------


class TestRegistry:
    def test_deciding_tests_per_kind(self) -> None:
        deciding = {
            kind: sorted(t.name for t in registered_for(kind) if t.decides(kind))
            for kind in ("numeric", "categorical", "boolean", "text")
        }
        assert deciding == {
            "numeric": ["ks", "missing"],
            "categorical": ["chi2", "missing"],
            "boolean": ["chi2", "missing"],
            "text": ["chi2", "missing", "oov"],
        }

    def test_every_entry_is_consistent(self) -> None:
        for name, t in REGISTRY.items():
            assert t.name == name
            assert t.decides_for <= t.kinds
            assert t.direction == ("below" if t.threshold_kind == "significance" else "above")
            assert t.has_p_value == (t.threshold_kind != "distance")
            assert t.default_threshold > 0
            assert (t.null_exponent > 0) == (t.threshold_kind == "distance")

    def test_documented_defaults(self) -> None:
        floors = {n: t.default_threshold for n, t in REGISTRY.items()}
        assert floors["ks"] == 0.1
        assert floors["chi2"] == 0.05
        assert floors["missing"] == 0.02
        assert REGISTRY["ks"].statistic

    def test_registry_entries_are_frozen(self) -> None:
        with pytest.raises(AttributeError):
            REGISTRY["ks"].default_threshold = 0.5  # type: ignore[misc]


# --- KS against the 1,001 reference quantiles --------------------------------------------------


class TestKolmogorovSmirnov:
    def test_reference_cdf_is_the_interpolated_quantile_function(self) -> None:
        q = quantiles_of(rng(1).normal(size=5000))
        x = rng(2).normal(size=300)
        expected = np.interp(x, q, np.linspace(0, 1, 1001))
        np.testing.assert_allclose(quantile_cdf(x, q), expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(quantile_cdf(x, q, left=True), expected, rtol=0, atol=1e-12)

    @pytest.mark.parametrize(("seed", "shift"), [(0, 0.0), (1, 0.3), (2, -1.0), (3, 0.05)])
    def test_d_equals_scipy_kstest_on_the_same_cdf(self, seed: int, shift: float) -> None:
        q = quantiles_of(rng(seed).normal(size=20000))
        window = rng(seed + 100).normal(size=1500) + shift
        expected = stats.kstest(window, lambda v: quantile_cdf(np.asarray(v), q)).statistic
        assert ks_statistic(np.sort(window), q) == pytest.approx(expected, abs=EXACT)

    def test_d_with_ties_in_the_window_equals_scipy(self) -> None:
        q = quantiles_of(rng(4).normal(size=20000))
        window = np.round(rng(5).normal(size=2000), 1)  # many repeated values
        expected = stats.kstest(window, lambda v: quantile_cdf(np.asarray(v), q)).statistic
        assert ks_statistic(np.sort(window), q) == pytest.approx(expected, abs=EXACT)

    def test_tied_reference_quantiles_use_both_sides_of_the_jump(self) -> None:
        # Reference constant at 5: F jumps from 0 to 1 at 5. Window: half 5, half 6.
        q = np.full(1001, 5.0)
        window = np.array([5.0] * 10 + [6.0] * 10)
        # On [5, 6) the window's ECDF is 0.5 and the reference's 1.
        assert ks_statistic(window, q) == pytest.approx(0.5, abs=EXACT)
        assert ks_statistic(np.full(10, 5.0), q) == 0.0
        assert ks_statistic(np.full(10, 4.0), q) == 1.0

    def test_d_on_a_discrete_reference_matches_a_brute_force_sup(self) -> None:
        ref = rng(6).integers(0, 5, size=10000).astype(float)
        q = quantiles_of(ref)
        window = np.sort(rng(7).integers(0, 6, size=500).astype(float))
        grid = np.linspace(-1, 7, 80001)
        ecdf = np.searchsorted(window, grid, side="right") / window.size
        brute = np.abs(ecdf - quantile_cdf(grid, q)).max()
        assert ks_statistic(window, q) == pytest.approx(brute, abs=1e-12)

    @pytest.mark.parametrize(("n", "m"), [(200, 300), (500, 1000), (1000, 50000), (40, 40)])
    def test_pvalue_equals_scipy_ks_2samp_asymptotic(self, n: int, m: int) -> None:
        x, y = rng(n).normal(size=n) + 0.15, rng(m).normal(size=m)
        res = stats.ks_2samp(x, y, method="asymp")
        assert round(n * m / (n + m)) <= KS_EXACT_MAX_N
        assert ks_pvalue(res.statistic, n, m) == pytest.approx(res.pvalue, rel=EXACT)

    @pytest.mark.parametrize("d", [0.02, 0.04, 0.06, 0.08])
    def test_pvalue_beyond_the_exact_range_stays_close_to_kstwo(self, d: float) -> None:
        n, m = 5000, 50000
        exact = stats.kstwo.sf(d, round(n * m / (n + m)))
        assert ks_pvalue(d, n, m) == pytest.approx(exact, rel=0.05)

    def test_ks_test_reports_d_as_the_effect(self) -> None:
        q = quantiles_of(rng(8).normal(size=10000))
        window = np.sort(rng(9).normal(size=1000) + 0.5)
        out = ks_test(window, q, 10000)
        assert out.effect == out.statistic > 0.15
        assert out.p_value is not None
        assert P_MIN <= out.p_value < 1e-10


# --- distances -----------------------------------------------------------------------------


class TestDistances:
    @pytest.mark.parametrize(("n", "m"), [(1000, 1001), (5000, 1001), (37, 1001), (10, 3)])
    def test_wasserstein_equals_scipy(self, n: int, m: int) -> None:
        a = np.sort(rng(n).normal(size=n) * 2 + 0.3)
        b = np.sort(rng(m + 1).normal(size=m))
        expected = stats.wasserstein_distance(a, b)
        assert float(wasserstein_1(a, b)) == pytest.approx(expected, rel=EXACT)

    def test_wasserstein_with_ties_and_rows(self) -> None:
        b = np.sort(rng(3).integers(0, 4, size=1001).astype(float))
        rows = np.sort(rng(4).integers(0, 5, size=(6, 250)).astype(float), axis=1)
        got = wasserstein_1(rows, b)
        assert got.shape == (6,)
        for row, value in zip(rows, got, strict=True):
            assert value == pytest.approx(stats.wasserstein_distance(row, b), rel=EXACT)

    def test_scale_guards_constant_features(self) -> None:
        assert scale_of(2.0, 5.0, 1.0) == 2.0
        assert scale_of(0.0, 5.0, 1.0) == 5.0
        assert scale_of(0.0, 0.0, -3.0) == 3.0
        assert scale_of(0.0, 0.0, 0.0) == 1.0

    def test_bin_counts_follow_the_profile_convention(self) -> None:
        edges = [1.0, 2.0]
        values = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
        # bin i holds edges[i-1] < x <= edges[i]
        assert bin_counts(values, edges).tolist() == [2, 2, 2]
        assert bin_counts(np.sort(values), edges, is_sorted=True).tolist() == [2, 2, 2]

    def test_psi_by_hand_with_the_documented_smoothing(self) -> None:
        w = np.array([30.0, 50.0, 20.0, 0.0])
        shares = np.array([0.25, 0.25, 0.5, 0.0])
        n_ref = 1000.0
        # Bin 4 is empty on both sides: dropped. k = 3 kept bins, half a count each.
        p = (w[:3] + 0.5) / (100 + 1.5)
        q = (shares[:3] * n_ref + 0.5) / (n_ref + 1.5)
        expected = float(np.sum((p - q) * np.log(p / q)))
        assert float(psi(w, shares, n_ref)) == pytest.approx(expected, rel=EXACT)

    def test_psi_of_an_unseen_bin_is_finite_and_large(self) -> None:
        value = float(psi(np.array([50.0, 50.0, 100.0]), np.array([0.5, 0.5, 0.0]), 10000))
        assert math.isfinite(value)
        assert value > 1.0

    def test_psi_of_identical_shares_is_near_zero_and_rows_work(self) -> None:
        shares = np.array([0.2, 0.3, 0.5])
        rows = np.array([[200.0, 300.0, 500.0], [500.0, 300.0, 200.0]])
        got = psi(rows, shares, 1000.0)
        assert got.shape == (2,)
        assert got[0] == pytest.approx(0.0, abs=1e-12)
        assert got[1] == pytest.approx(float(psi(rows[1], shares, 1000.0)), rel=EXACT)

    @pytest.mark.parametrize("seed", range(4))
    def test_js_equals_scipy_base_2(self, seed: int) -> None:
        w = rng(seed).integers(0, 50, size=8).astype(float)
        shares = rng(seed + 10).dirichlet(np.ones(8))
        shares[3] = 0.0  # an empty reference bin is fine for JS
        expected = jensenshannon(w / w.sum(), shares / shares.sum(), base=2)
        assert float(js_distance(w, shares)) == pytest.approx(expected, rel=EXACT)
        rows = np.vstack([w, w[::-1]])
        expected_rows = [jensenshannon(r / r.sum(), shares / shares.sum(), base=2) for r in rows]
        np.testing.assert_allclose(js_distance(rows, shares), expected_rows, rtol=EXACT)

    def test_js_bounds(self) -> None:
        assert float(js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))) == pytest.approx(1.0)
        assert float(js_distance(np.array([3.0, 1.0]), np.array([0.75, 0.25]))) == pytest.approx(0)

    def test_linf_by_hand(self) -> None:
        assert float(linf(np.array([60.0, 40.0, 0.0]), np.array([0.5, 0.5, 0.0]))) == (
            pytest.approx(0.1)
        )
        assert float(linf(np.array([0.0, 0.0]), np.array([0.5, 0.5]))) == pytest.approx(0.5)


# --- location tests --------------------------------------------------------------------------


class TestLocation:
    @pytest.mark.parametrize(
        "args",
        [
            (0.3, 1.2, 800, 0.0, 1.0, 50000),
            (-2.0, 0.1, 10, -2.1, 5.0, 30),
            (5.0, 3.0, 5000, 5.0, 3.0, 5000),
        ],
    )
    def test_welch_equals_ttest_ind_from_stats(self, args: tuple[float, ...]) -> None:
        m1, s1, n1, m2, s2, n2 = args
        expected = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False)
        t, p = welch_t(m1, s1, int(n1), m2, s2, int(n2))
        assert t == pytest.approx(expected.statistic, rel=EXACT, abs=1e-12)
        assert p == pytest.approx(expected.pvalue, rel=EXACT)

    def test_welch_of_constants(self) -> None:
        assert welch_t(1.0, 0.0, 10, 1.0, 0.0, 10) == (0.0, 1.0)
        t, p = welch_t(2.0, 0.0, 10, 1.0, 0.0, 10)
        assert t == F_MAX
        assert p == P_MIN

    @pytest.mark.parametrize("integers", [False, True])
    def test_mann_whitney_and_kruskal_equal_scipy(self, integers: bool) -> None:
        if integers:  # heavy ties
            ref = np.sort(rng(1).integers(0, 8, size=1001).astype(float))
            window = rng(2).integers(0, 9, size=1500).astype(float)
        else:
            ref = np.sort(rng(1).normal(size=1001))
            window = rng(2).normal(size=1500) + 0.1
        chunks = np.array_split(window, 3)
        mw, kw = rank_tests(ref, chunks)
        expected = stats.mannwhitneyu(window, ref, method="asymptotic")
        assert mw.statistic == pytest.approx(expected.statistic, rel=EXACT)
        assert mw.p_value == pytest.approx(expected.pvalue, rel=EXACT)
        assert mw.effect == pytest.approx(abs(expected.statistic / (1500 * 1001) - 0.5), rel=EXACT)
        expected_kw = stats.kruskal(ref, *chunks)
        assert kw.statistic == pytest.approx(expected_kw.statistic, rel=EXACT)
        assert kw.p_value == pytest.approx(expected_kw.pvalue, rel=EXACT)
        # Passing the sorted window (as the drift cycle does) changes nothing.
        assert rank_tests(ref, chunks, np.sort(window)) == (mw, kw)

    def test_rank_tests_on_identical_values_cannot_reject(self) -> None:
        mw, kw = rank_tests(np.full(50, 2.0), np.array_split(np.full(30, 2.0), 3))
        assert (mw.p_value, kw.p_value) == (1.0, 1.0)
        assert not mw.testable
        assert not kw.testable

    def test_anova_equals_f_oneway(self) -> None:
        groups = [rng(i).normal(loc=0.05 * i, size=300 + 50 * i) for i in range(4)]
        out = one_way_anova(groups)
        expected = stats.f_oneway(*groups)
        assert out.statistic == pytest.approx(expected.statistic, rel=EXACT)
        assert out.p_value == pytest.approx(expected.pvalue, rel=EXACT)
        allv = np.concatenate(groups)
        ssb = sum(g.size * (g.mean() - allv.mean()) ** 2 for g in groups)
        assert out.effect == pytest.approx(ssb / np.sum((allv - allv.mean()) ** 2), rel=EXACT)

    def test_anova_of_constant_groups(self) -> None:
        assert one_way_anova([np.ones(5), np.ones(5)]).p_value == 1.0
        out = one_way_anova([np.ones(5), np.full(5, 2.0)])
        assert (out.statistic, out.p_value) == (F_MAX, P_MIN)


# --- counts ------------------------------------------------------------------------------------


class TestChiSquared:
    @pytest.mark.parametrize("seed", range(3))
    def test_equals_chi2_contingency(self, seed: int) -> None:
        w = rng(seed).integers(20, 200, size=5).astype(float)
        r = rng(seed + 5).integers(100, 2000, size=5).astype(float)
        out = chi2_homogeneity(w, r)
        expected = stats.chi2_contingency(np.vstack([w, r]), correction=False)
        assert out.statistic == pytest.approx(expected.statistic, rel=EXACT)
        assert out.p_value == pytest.approx(expected.pvalue, rel=EXACT)
        assert out.effect == pytest.approx(np.abs(w / w.sum() - r / r.sum()).max(), rel=EXACT)

    def test_unseen_column_gives_a_finite_positive_p(self) -> None:
        # The reference never saw the third value; a goodness-of-fit test would divide by 0.
        w = np.array([400.0, 450.0, 150.0])
        r = np.array([5000.0, 5000.0, 0.0])
        out = chi2_homogeneity(w, r)
        expected = stats.chi2_contingency(np.vstack([w, r]), correction=False)
        assert out.statistic == pytest.approx(expected.statistic, rel=EXACT)
        assert out.p_value is not None
        assert 0.0 < out.p_value < 1e-10
        assert math.isfinite(out.statistic)

    def test_columns_empty_in_both_rows_are_dropped(self) -> None:
        w = np.array([30.0, 0.0, 70.0, 0.0])
        r = np.array([300.0, 0.0, 700.0, 0.0])
        out = chi2_homogeneity(w, r)
        expected = stats.chi2_contingency(
            np.array([[30.0, 70.0], [300.0, 700.0]]), correction=False
        )
        assert out.statistic == pytest.approx(expected.statistic, abs=EXACT)
        assert out.p_value == pytest.approx(1.0)

    def test_single_category_cannot_reject(self) -> None:
        out = chi2_homogeneity(np.array([1000.0, 0.0]), np.array([500.0, 0.0]))
        assert (out.statistic, out.p_value, out.testable) == (0.0, 1.0, False)

    def test_an_empty_side_cannot_reject(self) -> None:
        assert chi2_homogeneity(np.zeros(3), np.array([1.0, 2.0, 3.0])).p_value == 1.0
        assert chi2_homogeneity(np.array([1.0, 2.0]), np.zeros(2)).p_value == 1.0

    def test_extreme_tables_never_give_zero_or_nan(self) -> None:
        out = chi2_homogeneity(np.array([0.0, 5000.0]), np.array([1e7, 0.0]))
        assert out.p_value == P_MIN
        assert clip_p(float("nan")) == 1.0


class TestTwoProportion:
    def test_z_test_by_hand_and_against_chi2_contingency(self) -> None:
        x1, n1, share2, n2 = 150, 1000, 0.1, 20000
        out = two_proportion(x1, n1, share2, n2)
        pooled = (x1 + share2 * n2) / (n1 + n2)
        z = (x1 / n1 - share2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        assert out.statistic == pytest.approx(z, rel=EXACT)
        assert out.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=EXACT)
        table = [[x1, n1 - x1], [2000, 18000]]
        assert out.p_value == pytest.approx(
            stats.chi2_contingency(table, correction=False).pvalue, rel=EXACT
        )
        assert out.effect == pytest.approx(0.05)

    def test_fisher_when_an_expected_count_is_small(self) -> None:
        out = two_proportion(3, 1000, 0.0, 20000)
        assert out.p_value == pytest.approx(
            stats.fisher_exact([[3, 997], [0, 20000]]).pvalue, rel=EXACT
        )
        assert out.effect == pytest.approx(0.003)

    def test_no_missing_anywhere_is_not_testable(self) -> None:
        out = two_proportion(0, 1000, 0.0, 5000)
        assert (out.p_value, out.testable) == (1.0, False)
        assert not two_proportion(1000, 1000, 1.0, 50).testable
        assert not two_proportion(0, 0, 0.5, 50).testable

    def test_oov_counts(self) -> None:
        vocab = frozenset({"the", "cat"})
        assert oov_counts([["the", "dog"], [], ["cat", "cat", "eel"]], vocab) == (2, 5)


# --- multiple testing ------------------------------------------------------------------------


class TestCorrection:
    P: ClassVar[list[float]] = [0.01, 0.04, 0.03, 0.005, 0.2]

    def test_bonferroni_by_hand(self) -> None:
        adjusted, level = adjust(self.P, 0.05, "bonferroni")
        np.testing.assert_allclose(adjusted, [0.05, 0.2, 0.15, 0.025, 1.0], rtol=EXACT)
        assert level == pytest.approx(0.01)
        assert [a <= 0.05 for a in adjusted] == [True, False, False, True, False]

    def test_benjamini_hochberg_by_hand(self) -> None:
        # Sorted: 0.005, 0.01, 0.03, 0.04, 0.2 -> p * 5 / rank: 0.025, 0.025, 0.05, 0.05, 0.2
        adjusted, level = adjust(self.P, 0.05, "bh")
        np.testing.assert_allclose(adjusted, [0.025, 0.05, 0.05, 0.025, 0.2], rtol=EXACT)
        # Largest k with p_(k) <= k * 0.05 / 5: k = 4 (0.04 <= 0.04).
        assert level == pytest.approx(0.04)
        np.testing.assert_allclose(
            adjusted, stats.false_discovery_control(self.P, method="bh"), rtol=EXACT
        )

    def test_bh_with_nothing_rejected_keeps_the_bonferroni_level(self) -> None:
        adjusted, level = adjust([0.5, 0.9], 0.05, "bh")
        assert level == pytest.approx(0.025)
        assert (adjusted > 0.05).all()

    def test_none_and_empty(self) -> None:
        adjusted, level = adjust(self.P, 0.05, "none")
        np.testing.assert_array_equal(adjusted, self.P)
        assert level == 0.05
        adjusted, level = adjust([], 0.05, "bonferroni")
        assert adjusted.size == 0
        assert level == 0.05
