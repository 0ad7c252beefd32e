"""The profile builder on hand-made columns whose statistics are known in advance."""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.errors import ProfileError
from app.monitoring.profile import (
    N_QUANTILES,
    BooleanFeature,
    CategoricalFeature,
    ModelInfo,
    NumericFeature,
    PolicyMap,
    Profile,
    TextFeature,
    parse_profile,
)
from app.monitoring.profile_builder import (
    BuildOptions,
    BuildReport,
    FeatureOverride,
    build_profile,
    describe_column,
    infer_kind,
)

MODEL = ModelInfo(name="credit", version="3")


def build(
    columns: Mapping[str, Any],
    dtypes: Mapping[str, str] | None = None,
    *,
    target: str | None = "y",
    **kwargs: Any,
) -> tuple[Profile, BuildReport]:
    cols = dict(columns)
    if target is not None and target not in cols and target == "y":
        n = len(next(iter(cols.values())))
        cols["y"] = [i % 2 for i in range(n)]
    return build_profile(
        cols, dtypes or {}, target=target, model=MODEL, data_hash="sha256:abc", **kwargs
    )


def feature(profile: Profile, name: str) -> Any:
    return next(f for f in profile.features if f.name == name)


def describe(values: list[Any], dtype: str = "object", **options: Any) -> Any:
    return describe_column("col", values, dtype, BuildOptions(**options), BuildReport())


# --- numeric -------------------------------------------------------------------------------


class TestNumeric:
    def test_summary_statistics_of_1_to_101(self) -> None:
        f = describe(list(range(1, 102)), "int64")
        assert isinstance(f, NumericFeature)
        assert f.min == 1.0
        assert f.max == 101.0
        assert f.mean == pytest.approx(51.0)
        # Population std of n consecutive integers: sqrt((n² - 1) / 12) = sqrt(850).
        assert f.std == pytest.approx(math.sqrt(850.0))
        assert f.std == pytest.approx(float(np.std(np.arange(1, 102), ddof=0)))

    def test_named_quantiles_of_1_to_101(self) -> None:
        f = describe(list(range(1, 102)), "int64")
        # Linear interpolation on 101 evenly spaced values: quantile p is 1 + 100 p.
        assert f.quantiles == pytest.approx(
            {
                "p01": 2.0,
                "p05": 6.0,
                "p25": 26.0,
                "p50": 51.0,
                "p75": 76.0,
                "p95": 96.0,
                "p99": 100.0,
            }
        )

    def test_1001_quantiles_length_monotone_and_exact(self) -> None:
        f = describe(list(range(1, 102)), "int64")
        q = f.quantiles_1001
        assert len(q) == N_QUANTILES == 1001
        assert all(b >= a for a, b in itertools.pairwise(q))
        assert q[0] == 1.0
        assert q[-1] == 101.0
        # Quantile k/1000 of 1..101 is 1 + k/10.
        assert q[500] == pytest.approx(51.0)
        assert q[123] == pytest.approx(13.3)

    def test_decile_bins_of_1_to_101(self) -> None:
        f = describe(list(range(1, 102)), "int64")
        assert f.bin_edges == pytest.approx([11.0, 21.0, 31.0, 41.0, 51.0, 61.0, 71.0, 81.0, 91.0])
        # Bin i holds edges[i-1] < x <= edges[i]: 1..11 is 11 values, the others 10 each.
        assert f.bin_ratios == pytest.approx([11 / 101] + [10 / 101] * 9)

    def test_bin_edges_deduplicated_for_few_distinct_values(self) -> None:
        f = describe([1] * 50 + [2] * 50, "int64")
        # Deciles 0.1..0.4 are 1, the median interpolates to 1.5, 0.6..0.9 are 2.
        assert f.bin_edges == [1.0, 1.5, 2.0]
        assert f.bin_ratios == pytest.approx([0.5, 0.0, 0.5, 0.0])

    def test_constant_column_has_one_edge(self) -> None:
        f = describe([7.0] * 20, "float64")
        assert f.bin_edges == [7.0]
        assert f.bin_ratios == pytest.approx([1.0, 0.0])
        assert f.std == 0.0
        assert f.min == f.max == 7.0

    def test_bin_ratios_sum_to_one_and_agree_with_counting(self) -> None:
        rng = np.random.default_rng(42)
        values = [float(x) for x in rng.lognormal(3.0, 1.0, size=997)]
        f = describe(values, "float64")
        assert sum(f.bin_ratios) == pytest.approx(1.0, abs=1e-9)
        assert len(f.bin_ratios) == len(f.bin_edges) + 1
        counts = [0] * (len(f.bin_edges) + 1)
        for x in values:
            counts[bisect_left(f.bin_edges, x)] += 1
        assert f.bin_ratios == pytest.approx([c / len(values) for c in counts], abs=1e-9)
        expected_edges = np.quantile(np.asarray(values), [i / 10 for i in range(1, 10)])
        assert f.bin_edges == pytest.approx(expected_edges.tolist())

    def test_missing_values_ratio_and_required(self) -> None:
        f = describe([1.0, None, 3.0, float("nan"), 5.0], "float64")
        assert f.missing_ratio == pytest.approx(2 / 5)
        assert f.required is False
        # Statistics are over the present values only.
        assert f.mean == pytest.approx(3.0)
        assert f.min == 1.0
        assert f.max == 5.0

    def test_complete_column_is_required(self) -> None:
        f = describe([1.0, 2.0, 3.0], "float64")
        assert f.missing_ratio == 0.0
        assert f.required is True

    def test_non_finite_values_left_out_with_a_warning(self) -> None:
        report = BuildReport()
        f = describe_column(
            "x", [1.0, float("inf"), 3.0, -float("inf")], "float64", BuildOptions(), report
        )
        assert isinstance(f, NumericFeature)
        assert (f.min, f.max) == (1.0, 3.0)
        assert any("x" in w and "2 non-finite" in w for w in report.warnings)

    def test_range_tolerance_default_and_override(self) -> None:
        p, _ = build(
            {"a": [1.0, 2.0], "b": [1.0, 2.0]},
            options=BuildOptions(
                range_tolerance=0.3, features={"b": FeatureOverride(range_tolerance=0.0)}
            ),
        )
        assert feature(p, "a").range_tolerance == 0.3
        assert feature(p, "b").range_tolerance == 0.0

    def test_reservoir_sample_only_when_asked(self) -> None:
        values = [float(i) for i in range(100)]
        assert describe(values, "float64").sample is None
        f = describe(values, "float64", reservoir_size=10)
        assert f.sample is not None
        assert len(f.sample) == 10
        assert len(set(f.sample)) == 10
        assert set(f.sample) <= set(values)

    def test_string_in_numeric_column_is_a_profile_error(self) -> None:
        with pytest.raises(ProfileError, match="'amount'") as exc:
            build({"amount": [1.0, 2.0, "three"]}, {"amount": "float64"})
        assert exc.value.field == "amount"
        assert "three" in str(exc.value)

    def test_bool_in_numeric_column_is_a_profile_error(self) -> None:
        with pytest.raises(ProfileError, match="amount"):
            build({"amount": [1.0, True]}, {"amount": "float64"})

    def test_numeric_column_without_finite_values_is_a_profile_error(self) -> None:
        with pytest.raises(ProfileError, match="no finite values"):
            build({"amount": [float("inf"), None, float("-inf")]}, {"amount": "float64"})


# --- categorical ---------------------------------------------------------------------------


class TestCategorical:
    VALUES = ["a"] * 5 + ["b"] * 3 + ["c", "d"]

    def test_top_k_ratios_and_other_share(self) -> None:
        f = describe(self.VALUES, top_k=2)
        assert isinstance(f, CategoricalFeature)
        assert f.categories == pytest.approx({"a": 0.5, "b": 0.3})
        assert list(f.categories) == ["a", "b"]  # most frequent first
        assert f.other_ratio == pytest.approx(0.2)
        assert sum(f.categories.values()) + f.other_ratio == pytest.approx(1.0)

    def test_domain_holds_rare_values(self) -> None:
        f = describe(self.VALUES, top_k=2)
        assert set(f.domain) == {"a", "b", "c", "d"}
        assert f.domain_complete is True

    def test_domain_cap_marks_domain_incomplete(self) -> None:
        f = describe(self.VALUES, top_k=2, max_domain=3)
        assert f.domain_complete is False
        assert len(f.domain) == 3
        assert {"a", "b"} <= set(f.domain)

    def test_domain_exactly_at_cap_is_complete(self) -> None:
        f = describe(self.VALUES, max_domain=4)
        assert f.domain_complete is True
        assert len(f.domain) == 4

    def test_all_values_in_top_k_leave_no_other(self) -> None:
        f = describe(self.VALUES, top_k=10)
        assert f.categories == pytest.approx({"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.1})
        assert f.other_ratio == pytest.approx(0.0, abs=1e-12)

    def test_equivalent_spellings_are_one_category(self) -> None:
        f = describe([3, 3.0, "3", 4], "object")
        assert isinstance(f, CategoricalFeature)
        assert f.categories == pytest.approx({"3": 0.75, "4": 0.25})
        assert sorted(f.domain) == ["3", "4"]

    def test_missing_values_in_categorical(self) -> None:
        f = describe(["x", None, "y", "x"], "object")
        assert f.missing_ratio == pytest.approx(0.25)
        assert f.required is False
        assert f.categories == pytest.approx({"x": 2 / 3, "y": 1 / 3})

    def test_non_scalar_value_is_a_profile_error(self) -> None:
        with pytest.raises(ProfileError, match="non-scalar"):
            describe(["x", ["y"]], "object")


# --- boolean and text ----------------------------------------------------------------------


class TestBooleanAndText:
    def test_boolean_true_ratio(self) -> None:
        f = describe([True, False, True, True, None], "object")
        assert isinstance(f, BooleanFeature)
        assert f.true_ratio == pytest.approx(0.75)
        assert f.missing_ratio == pytest.approx(0.2)

    def test_boolean_spellings_with_kind_override(self) -> None:
        f = describe_column(
            "col",
            ["yes", "no", "Y", "0", 1],
            "object",
            BuildOptions(),
            BuildReport(),
            kind="boolean",
        )
        assert isinstance(f, BooleanFeature)
        assert f.true_ratio == pytest.approx(3 / 5)

    def test_boolean_column_with_non_boolean_value_is_an_error(self) -> None:
        with pytest.raises(ProfileError, match="maybe"):
            describe_column(
                "col", [True, "maybe"], "object", BuildOptions(), BuildReport(), kind="boolean"
            )

    def test_text_vocabulary_oov_and_lengths(self) -> None:
        values = ["The cat sat.", "the DOG ran fast", "a cat"]
        f = describe(values, vocabulary_size=3)
        assert isinstance(f, TextFeature)
        # Counts: the 2, cat 2, then a, dog, fast, ran, sat once each (ties alphabetical).
        assert f.vocabulary == ["cat", "the", "a"]
        # 9 tokens, of which dog, fast, ran and sat are outside the vocabulary.
        assert f.oov_rate == pytest.approx(4 / 9)
        # Token counts 3, 4, 2 → sorted 2, 3, 4.
        assert f.length_quantiles["p50"] == pytest.approx(3.0)
        assert f.length_quantiles["p01"] == pytest.approx(2.02)
        assert f.length_quantiles["p99"] == pytest.approx(3.98)
        assert sum(f.bin_ratios) == pytest.approx(1.0)

    def test_full_vocabulary_has_no_oov(self) -> None:
        f = describe(["one two three", "two three four", None])
        assert isinstance(f, TextFeature)
        assert f.vocabulary == ["three", "two", "four", "one"]
        assert f.oov_rate == 0.0
        assert f.missing_ratio == pytest.approx(1 / 3)


# --- kind inference and overrides ----------------------------------------------------------


class TestKinds:
    OPTIONS = BuildOptions()

    @pytest.mark.parametrize(
        ("values", "dtype", "kind"),
        [
            ([True, False, None], "object", "boolean"),
            ([True, False], "bool", "boolean"),
            ([1, 2, 3], "int64", "numeric"),
            ([1, 2, None], "Int64", "numeric"),
            ([1.5, 2.5], "float64", "numeric"),
            ([1, 2.5, None], "object", "numeric"),
            (["a", "b", "c"], "object", "categorical"),
            (["red car", "blue bike"], "object", "categorical"),
            (["a long sentence of words", "another one right here"], "object", "text"),
            ([1, "a"], "object", "categorical"),
            ([True, 1], "object", "categorical"),
        ],
    )
    def test_infer_kind(self, values: list[Any], dtype: str, kind: str) -> None:
        assert infer_kind(values, dtype, self.OPTIONS) == kind

    def test_text_threshold_is_configurable(self) -> None:
        values = ["red car", "blue bike"]
        assert infer_kind(values, "object", BuildOptions(text_min_tokens=2.0)) == "text"

    def test_build_infers_kinds_from_pandas_dtypes(self) -> None:
        df = pd.DataFrame(
            {
                "flag": [True, False, True, True],
                "n": [1, 2, 3, 4],
                "x": [0.5, 1.5, 2.5, 3.5],
                "city": ["paris", "lyon", "paris", "nice"],
                "note": [
                    "this is a note",
                    "another longer note here",
                    "yet another note",
                    "last note of all",
                ],
                "y": [0, 1, 0, 1],
            }
        )
        columns = {str(c): df[c].astype(object).tolist() for c in df.columns}
        dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
        p, _ = build(columns, dtypes)
        assert {f.name: f.kind for f in p.features} == {
            "flag": "boolean",
            "n": "numeric",
            "x": "numeric",
            "city": "categorical",
            "note": "text",
        }
        assert p.feature_names == ["flag", "n", "x", "city", "note"]  # column order kept
        assert p.n_rows == 4
        assert p.target == "y"

    def test_overrides_kind_ignore_required_policy(self) -> None:
        options = BuildOptions(
            features={
                "zip": FeatureOverride(kind="categorical"),
                "row_id": FeatureOverride(ignore=True),
                "x": FeatureOverride(required=False, policy=PolicyMap.uniform("observe")),
            }
        )
        p, _ = build(
            {"zip": [75001, 69001, 75001], "row_id": [1, 2, 3], "x": [1.0, 2.0, 3.0]},
            {"zip": "int64", "row_id": "int64", "x": "float64"},
            options=options,
        )
        assert p.feature_names == ["zip", "x"]
        zip_f = feature(p, "zip")
        assert isinstance(zip_f, CategoricalFeature)
        assert zip_f.categories == pytest.approx({"75001": 2 / 3, "69001": 1 / 3})
        x = feature(p, "x")
        assert x.required is False  # never missing, but overridden
        assert x.policy == PolicyMap.uniform("observe")

    def test_ignore_argument_and_unknown_override_warning(self) -> None:
        p, report = build(
            {"id": [1, 2], "x": [1.0, 2.0]},
            ignore=["id"],
            options=BuildOptions(features={"ghost": FeatureOverride(kind="numeric")}),
        )
        assert p.feature_names == ["x"]
        assert any("ghost" in w for w in report.warnings)

    def test_missing_ignore_column_is_an_error(self) -> None:
        with pytest.raises(ProfileError, match="'nope'"):
            build({"x": [1.0, 2.0]}, ignore=["nope"])

    def test_no_features_left_is_an_error(self) -> None:
        with pytest.raises(ProfileError, match="no feature columns"):
            build({"y": [0, 1]})


# --- prediction section and errors ---------------------------------------------------------


class TestPredictionSection:
    def test_from_prediction_column(self) -> None:
        p, report = build(
            {"x": [1.0, 2.0, 3.0, 4.0], "score": [0.1, 0.4, 0.35, 0.8]},
            {"x": "float64", "score": "float64"},
            prediction="score",
        )
        assert p.prediction is not None
        assert p.prediction.source == "prediction"
        assert p.prediction.output_name is None
        dist = p.prediction.distribution
        assert isinstance(dist, NumericFeature)
        assert dist.name == "score"
        assert dist.mean == pytest.approx(0.4125)
        assert "score" not in p.feature_names
        assert "y" not in p.feature_names
        assert not any("prediction" in w for w in report.warnings)

    def test_from_target_warns_and_marks_source(self) -> None:
        p, report = build(
            {"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 1, 1]},
            {"label": "int64"},
            target="label",
        )
        assert p.prediction is not None
        assert p.prediction.source == "target"
        dist = p.prediction.distribution
        assert isinstance(dist, CategoricalFeature)  # few integral values: class labels
        assert dist.categories == pytest.approx({"1": 0.75, "0": 0.25})
        assert any("'label'" in w and "labels are not model outputs" in w for w in report.warnings)

    def test_output_name_renames_the_distribution(self) -> None:
        p, _ = build(
            {"x": [1.0, 2.0], "pred": [0.2, 0.9]},
            {"pred": "float64"},
            prediction="pred",
            output_name="probability",
        )
        assert p.prediction is not None
        assert p.prediction.output_name == "probability"
        assert p.prediction.distribution.name == "probability"

    def test_many_integer_values_are_numeric(self) -> None:
        p, _ = build(
            {"x": [float(i) for i in range(60)], "pred": list(range(60))},
            {"pred": "int64"},
            prediction="pred",
        )
        assert p.prediction is not None
        assert isinstance(p.prediction.distribution, NumericFeature)

    def test_string_classes_are_categorical(self) -> None:
        p, _ = build(
            {"x": [1.0, 2.0, 3.0], "pred": ["cat", "dog", "cat"]},
            prediction="pred",
        )
        assert p.prediction is not None
        assert isinstance(p.prediction.distribution, CategoricalFeature)

    def test_no_target_no_prediction_section(self) -> None:
        p, _ = build({"x": [1.0, 2.0]}, target=None)
        assert p.prediction is None

    def test_missing_target_column_names_it(self) -> None:
        with pytest.raises(ProfileError, match="column 'label' is not in the data") as exc:
            build({"x": [1.0, 2.0]}, target="label")
        assert exc.value.field == "label"

    def test_missing_prediction_column_names_it(self) -> None:
        with pytest.raises(ProfileError, match="'pred'"):
            build({"x": [1.0, 2.0]}, prediction="pred")


def test_built_profile_is_a_valid_document() -> None:
    rng = np.random.default_rng(1)
    n = 300
    columns = {
        "age": [int(x) for x in rng.integers(18, 90, n)],
        "income": [
            None if i % 17 == 0 else float(x) for i, x in enumerate(rng.normal(5e4, 1e4, n))
        ],
        "city": [str(x) for x in rng.choice(["paris", "lyon", "nice", "lille"], n)],
        "y": [int(x) for x in rng.integers(0, 2, n)],
    }
    p, _ = build(columns, {"age": "int64", "income": "float64"})
    again = parse_profile(p.model_dump(mode="json"))
    assert again == p
    assert p.n_rows == n
    assert p.model == MODEL
    income = feature(p, "income")
    assert income.missing_ratio == pytest.approx(18 / n)  # rows 0, 17, …, 289


def test_an_all_missing_column_is_kept_as_an_empty_category() -> None:
    from app.monitoring.profile import ModelInfo as _ModelInfo
    from app.monitoring.profile_builder import build_profile as _build

    profile, report = _build(
        {"a": [1.0, 2.0, 3.0], "empty": [None, None, None]},
        {"a": "float64", "empty": "float64"},
        target=None,
        model=_ModelInfo(name="m"),
        data_hash="x",
    )
    empty = next(f for f in profile.features if f.name == "empty")
    assert empty.kind == "categorical"
    assert empty.missing_ratio == 1.0
    assert not empty.required
    assert any("every value is missing" in w for w in report.warnings)
