"""The validator: every violation kind, policies, bins, and the two paths agreeing."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.monitoring import feature_checks
from app.monitoring.batch import Batch
from app.monitoring.feature_checks import compile_feature
from app.monitoring.profile import (
    MISSING_BIN,
    OTHER_BIN,
    UNSEEN_BIN,
    PolicyMap,
    Profile,
    ViolationKind,
)
from app.monitoring.validator import MAX_DETAILS, BatchReport, Validator
from tests.unit.monitoring.factories import boolean, categorical, numeric, profile, text

# age: numeric, min 0, max 10, tolerance 0.5 → accepted range [-5, 15] (exact in binary).
AGE = numeric("age", lo=0.0, hi=10.0, edges=[2.5, 5.0, 7.5], range_tolerance=0.5)
INCOME = numeric("income", lo=0.0, hi=100.0, edges=[50.0], required=False, missing_ratio=0.2)
CITY = categorical(
    "city",
    {"paris": 0.6, "lyon": 0.3},
    ["paris", "lyon", "nice", "3"],
    other_ratio=0.1,
)
TAG = categorical(
    "tag",
    {"a": 0.5, "b": 0.4},
    ["a", "b", "c"],
    other_ratio=0.1,
    domain_complete=False,
    required=False,
)
FLAG = boolean("flag", true_ratio=0.25)
NOTE = text("note", edges=[2.0, 5.0])


@pytest.fixture
def prof() -> Profile:
    return profile([AGE, INCOME, CITY, TAG, FLAG, NOTE])


def full_row_batch(n: int = 1, **overrides: list[Any]) -> Batch:
    """A batch of n clean rows, with some columns replaced."""
    columns: dict[str, list[Any]] = {
        "age": [5.0] * n,
        "income": [50.0] * n,
        "city": ["paris"] * n,
        "tag": ["a"] * n,
        "flag": [True] * n,
        "note": ["the cat"] * n,
    }
    for name, values in overrides.items():
        columns[name] = values
    return Batch(n, columns)


def rows_of(report: BatchReport, feature: str, kind: ViolationKind) -> list[int]:
    return report.columns[feature].violations.get(kind, [])


def bins(report: BatchReport, v: Validator, feature: str) -> dict[str, int]:
    labels = v.by_name[feature].bin_labels
    return {
        label: c for label, c in zip(labels, report.columns[feature].bin_counts, strict=True) if c
    }


BOTH = pytest.mark.parametrize("vectorize", [False, True], ids=["python", "vector"])


@BOTH
def test_clean_batch_has_no_violations(prof: Profile, vectorize: bool) -> None:
    report = Validator(prof).validate(full_row_batch(20), vectorize=vectorize)
    assert report.n_violations == 0
    assert report.violation_counts == {}
    assert report.details == []
    assert report.rejected is False
    assert report.n_rows == 20


# --- missing -------------------------------------------------------------------------------


@BOTH
def test_missing_on_required_feature_is_enforced(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    report = v.validate(
        full_row_batch(4, age=[1.0, None, 2.0, None], city=[None, "paris", "lyon", float("nan")]),
        vectorize=vectorize,
    )
    assert rows_of(report, "age", "missing") == [1, 3]
    assert rows_of(report, "city", "missing") == [0, 3]
    assert report.violation_counts[("age", "missing")] == 2
    assert report.rejected is True
    assert {d.policy for d in report.details} == {"enforce"}
    assert bins(report, v, "age")[MISSING_BIN] == 2
    assert bins(report, v, "city")[MISSING_BIN] == 2


@BOTH
def test_missing_on_optional_feature_is_only_binned(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    report = v.validate(
        full_row_batch(3, income=[None, 1.0, None], tag=[None, "a", None]), vectorize=vectorize
    )
    assert report.n_violations == 0
    assert report.rejected is False
    assert bins(report, v, "income") == {"00": 1, MISSING_BIN: 2}
    assert bins(report, v, "tag") == {"a": 1, MISSING_BIN: 2}


def test_missing_boolean_and_text_on_required(prof: Profile) -> None:
    report = Validator(prof).validate(full_row_batch(2, flag=[None, True], note=["x", None]))
    assert rows_of(report, "flag", "missing") == [0]
    assert rows_of(report, "note", "missing") == [1]


# --- wrong_type ----------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("feature", "bad"),
    [
        ("age", ["12", True, [1.0], {"v": 1}]),
        ("city", [[1], {"a": 1}, ["paris"], [None]]),
        ("flag", ["maybe", 2, [True], 0.5]),
        ("note", [5, True, ["a b"], 1.5]),
    ],
)
def test_wrong_type(prof: Profile, vectorize: bool, feature: str, bad: list[Any]) -> None:
    v = Validator(prof)
    good = full_row_batch(1).columns[feature][0]
    values = [good, *bad]
    report = v.validate(full_row_batch(len(values), **{feature: values}), vectorize=vectorize)
    assert rows_of(report, feature, "wrong_type") == [1, 2, 3, 4]
    assert report.violation_counts == {(feature, "wrong_type"): 4}
    assert bins(report, v, feature)[UNSEEN_BIN] == 4
    assert report.rejected is True  # wrong_type is enforced by default
    assert [d.value for d in report.details] == bad


@BOTH
def test_boolean_spellings_are_not_wrong_type(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    values = [True, False, 1, 0, 1.0, "yes", "No", " TRUE ", "f", "0"]
    report = v.validate(full_row_batch(len(values), flag=values), vectorize=vectorize)
    assert report.n_violations == 0
    assert bins(report, v, "flag") == {"true": 5, "false": 5}


# --- out_of_range --------------------------------------------------------------------------


@BOTH
def test_out_of_range_honours_tolerance_exactly(prof: Profile, vectorize: bool) -> None:
    # Range [0, 10] with tolerance 0.5 * 10 = 5 → values in [-5, 15] are in range.
    values = [-5.0, 15.0, 15, -5, -5.000001, 15.000001, 100, -1e9, 0.0, 10.0]
    report = Validator(prof).validate(full_row_batch(len(values), age=values), vectorize=vectorize)
    assert rows_of(report, "age", "out_of_range") == [4, 5, 6, 7]
    assert report.rejected is False  # out_of_range is observed by default
    assert report.columns["age"].clean == [float(x) for x in values]


def test_zero_tolerance_flags_anything_past_min_max() -> None:
    p = profile([numeric("x", lo=1.0, hi=2.0, edges=[1.5], range_tolerance=0.0)])
    report = Validator(p).validate(Batch(4, {"x": [1.0, 2.0, 0.999, 2.001]}))
    assert rows_of(report, "x", "out_of_range") == [2, 3]


# --- unknown_category ----------------------------------------------------------------------


@BOTH
def test_unknown_category_vs_rare_training_value(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    values = ["paris", "nice", "tokyo", "lyon", "nice", "berlin", 3, 3.0, "Paris"]
    report = v.validate(full_row_batch(len(values), city=values), vectorize=vectorize)
    # "nice" and 3/3.0 (canonical "3") were seen in training outside the top K: __other__.
    assert rows_of(report, "city", "unknown_category") == [2, 5, 8]
    assert bins(report, v, "city") == {"paris": 1, "lyon": 1, OTHER_BIN: 4, UNSEEN_BIN: 3}
    assert report.rejected is False  # observed by default


@BOTH
def test_incomplete_domain_never_flags_unseen(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    values = ["a", "c", "zzz", "b", "never-seen"]
    report = v.validate(full_row_batch(len(values), tag=values), vectorize=vectorize)
    assert "unknown_category" not in report.columns["tag"].violations
    assert bins(report, v, "tag") == {"a": 1, "b": 1, OTHER_BIN: 3}


def test_categorical_bool_and_number_keys() -> None:
    p = profile([categorical("c", {"true": 0.5, "1": 0.5}, ["true", "1"])])
    v = Validator(p)
    for vectorize in (False, True):
        report = v.validate(Batch(5, {"c": [True, 1, 1.0, "1", False]}), vectorize=vectorize)
        assert bins(report, v, "c") == {"true": 1, "1": 3, UNSEEN_BIN: 1}
        assert rows_of(report, "c", "unknown_category") == [4]


# --- non_finite ----------------------------------------------------------------------------


@BOTH
def test_non_finite_numbers(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    values = [1.0, float("nan"), float("inf"), -float("inf"), 10**400, -(10**400), 2**70, 3]
    report = v.validate(full_row_batch(len(values), age=values), vectorize=vectorize)
    assert rows_of(report, "age", "non_finite") == [1, 2, 3, 4, 5]
    assert rows_of(report, "age", "out_of_range") == [6]  # 2**70 is finite but far out
    assert bins(report, v, "age")[UNSEEN_BIN] == 5
    assert report.columns["age"].clean == [1.0, float(2**70), 3.0]
    assert report.rejected is True  # non_finite is enforced by default
    details = {d.row: d.as_detail() for d in report.details}
    assert details[1]["value"] == "NaN"
    assert details[2]["value"] == "Infinity"
    assert details[3]["value"] == "-Infinity"


def test_details_of_non_finite_values_serialise_with_orjson() -> None:
    # The sidecar renders error details with orjson, which refuses ints beyond 64 bits.
    p = profile([numeric("x", edges=[50.0])])
    values = [10**400, -(2**64), 2**64 - 1, float("nan"), "y" * 300]
    report = Validator(p).validate(Batch(len(values), {"x": values}))
    details = [d.as_detail() for d in report.details]
    decoded = orjson.loads(orjson.dumps(details))
    by_row = {d["row"]: d["value"] for d in decoded}
    assert by_row[0] == ("1" + "0" * 199 + "…")  # 401 digits, truncated like any long text
    assert by_row[1] == str(-(2**64))
    assert by_row[2] == 2**64 - 1  # still fits: kept as a number
    assert by_row[3] == "NaN"
    assert by_row[4] == "y" * 200 + "…"


def test_nan_is_missing_for_categorical_boolean_and_text(prof: Profile) -> None:
    nan = float("nan")
    report = Validator(prof).validate(full_row_batch(1, city=[nan], flag=[nan], note=[nan]))
    for feature in ("city", "flag", "note"):
        assert report.columns[feature].violations == {"missing": [0]}


# --- unknown features, policies ------------------------------------------------------------


@pytest.mark.parametrize("policy", ["observe", "enforce"])
def test_unknown_feature(prof: Profile, policy: Any) -> None:
    batch = full_row_batch(3)
    batch.columns["extra"] = [1, 2, 3]
    batch.columns["debug"] = ["x", "y", "z"]
    report = Validator(prof, unknown_features=policy).validate(batch)
    assert report.violation_counts == {(OTHER_BIN, "unknown_feature"): 6}
    assert report.n_violations == 6
    assert report.rejected is (policy == "enforce")
    assert [(d.feature, d.row, d.kind, d.policy) for d in report.details] == [
        ("extra", None, "unknown_feature", policy),
        ("debug", None, "unknown_feature", policy),
    ]
    assert "extra" not in report.columns


def test_unknown_feature_on_empty_batch_is_not_counted(prof: Profile) -> None:
    batch = Batch(0, {"extra": []})
    report = Validator(prof, unknown_features="enforce").validate(batch)
    assert report.n_violations == 0
    assert report.rejected is False


def test_enforce_policy_on_out_of_range() -> None:
    p = profile(
        [
            numeric(
                "x",
                lo=0.0,
                hi=1.0,
                edges=[0.5],
                range_tolerance=0.0,
                policy=PolicyMap(out_of_range="enforce"),
            )
        ]
    )
    report = Validator(p).validate(Batch(2, {"x": [0.5, 2.0]}))
    assert report.rejected is True
    assert report.details[0].policy == "enforce"


def test_observe_policy_on_missing() -> None:
    p = profile([numeric("x", edges=[50.0], policy=PolicyMap.uniform("observe"))])
    report = Validator(p).validate(Batch(2, {"x": [None, "bad"]}))
    assert report.n_violations == 2
    assert report.rejected is False
    assert {d.policy for d in report.details} == {"observe"}


def test_observe_only_downgrades_everything(prof: Profile) -> None:
    batch = full_row_batch(2, age=[None, "x"], flag=["maybe", True])
    batch.columns["extra"] = [1, 2]
    assert Validator(prof, unknown_features="enforce").validate(batch).rejected is True
    v = Validator(prof, unknown_features="enforce", observe_only=True)
    report = v.validate(batch)
    assert report.rejected is False
    assert report.n_violations == 1 + 1 + 1 + 2
    assert {d.policy for d in report.details} == {"observe"}
    assert v.unknown_features == "observe"


# --- absent features -----------------------------------------------------------------------


def test_absent_features(prof: Profile) -> None:
    v = Validator(prof)
    batch = full_row_batch(5)
    del batch.columns["age"]  # required
    del batch.columns["income"]  # optional
    report = v.validate(batch)
    assert report.violation_counts == {("age", "missing"): 5}
    assert rows_of(report, "age", "missing") == [0, 1, 2, 3, 4]
    assert bins(report, v, "age") == {MISSING_BIN: 5}
    assert bins(report, v, "income") == {MISSING_BIN: 5}
    assert "income" not in {f for f, _ in report.violation_counts}
    # One column-level detail (row None) for the absent required feature.
    assert [(d.row, d.feature, d.kind, d.value) for d in report.details] == [
        (None, "age", "missing", None)
    ]
    assert report.rejected is True


def test_absent_required_feature_in_empty_batch(prof: Profile) -> None:
    report = Validator(prof).validate(Batch(0, {}))
    assert report.n_violations == 0
    assert report.rejected is False
    assert all(sum(r.bin_counts) == 0 for r in report.columns.values())


# --- details -------------------------------------------------------------------------------


def test_details_capped_with_enforced_first() -> None:
    # Profile order puts the observed feature first, so enforced ones are found later.
    p = profile(
        [
            numeric("obs", lo=0.0, hi=1.0, edges=[0.5], range_tolerance=0.0),
            numeric("enf", lo=0.0, hi=1.0, edges=[0.5]),
        ]
    )
    n = 150
    batch = Batch(n, {"obs": [5.0] * n, "enf": [0.5] * 140 + ["bad"] * 10})
    report = Validator(p).validate(batch)
    assert report.n_violations == 160
    assert report.violation_counts == {("obs", "out_of_range"): 150, ("enf", "wrong_type"): 10}
    assert len(report.details) == MAX_DETAILS
    assert [(d.feature, d.row) for d in report.details[:10]] == [
        ("enf", r) for r in range(140, 150)
    ]
    assert all(d.policy == "enforce" for d in report.details[:10])
    assert all(d.feature == "obs" and d.policy == "observe" for d in report.details[10:])
    assert [d.row for d in report.details[10:]] == list(range(90))
    assert len(report.columns["obs"].violations["out_of_range"]) == 150  # uncapped


def test_enforced_details_sorted_by_row_column_level_first(prof: Profile) -> None:
    batch = full_row_batch(3, note=[1, "ok", 2], flag=["x", True, True])
    del batch.columns["age"]
    report = Validator(prof).validate(batch)
    assert [(d.row, d.feature) for d in report.details] == [
        (None, "age"),
        (0, "flag"),
        (0, "note"),
        (2, "note"),
    ]


def test_detail_json_is_safe_and_truncated() -> None:
    p = profile([numeric("x", edges=[50.0])])
    long_text = "y" * 500
    report = Validator(p).validate(Batch(2, {"x": [long_text, list(range(200))]}))
    d0, d1 = (d.as_detail() for d in report.details)
    assert d0["kind"] == "wrong_type"
    assert d0["feature"] == "x"
    assert d0["row"] == 0
    assert d0["value"] == "y" * 200 + "…"
    assert isinstance(d1["value"], str)
    assert d1["value"].endswith("…")
    assert len(d1["value"]) == 201
    assert d0["message"]


# --- bins ----------------------------------------------------------------------------------


@BOTH
def test_numeric_bins_edge_value_goes_to_lower_bin(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    assert v.by_name["age"].bin_labels == ["00", "01", "02", "03", MISSING_BIN, UNSEEN_BIN]
    values = [2.5, 2.5000001, 5.0, 7.5, 7.6, -100.0, 100, 0]
    report = v.validate(full_row_batch(len(values), age=values), vectorize=vectorize)
    assert report.columns["age"].bin_counts == [3, 2, 1, 2, 0, 0]


def test_bin_labels_zero_padded_for_many_bins() -> None:
    check = compile_feature(numeric("x", edges=[float(i) for i in range(1, 12)]))
    assert check.bin_labels[:3] == ["00", "01", "02"]
    assert check.bin_labels[11] == "11"
    assert len(check.bin_labels) == 12 + 2


def test_categorical_boolean_text_bin_labels(prof: Profile) -> None:
    v = Validator(prof)
    assert v.by_name["city"].bin_labels == ["paris", "lyon", OTHER_BIN, UNSEEN_BIN, MISSING_BIN]
    assert v.by_name["flag"].bin_labels == ["false", "true", UNSEEN_BIN, MISSING_BIN]
    assert v.by_name["note"].bin_labels == ["00", "01", "02", MISSING_BIN, UNSEEN_BIN]


@BOTH
def test_text_bins_by_token_count(prof: Profile, vectorize: bool) -> None:
    v = Validator(prof)
    values = ["", "one", "one two", "a b c", "a, b, c, d, e!", "1 2 3 4 5 6", "...", None]
    report = v.validate(full_row_batch(len(values), note=values), vectorize=vectorize)
    # Token counts 0, 1, 2 | 3, 5 | 6; "..." has no tokens; None is missing (required).
    assert bins(report, v, "note") == {"00": 4, "01": 2, "02": 1, MISSING_BIN: 1}
    assert rows_of(report, "note", "missing") == [7]


def test_reference_ratios_scaled_by_missing_ratio() -> None:
    check = compile_feature(INCOME)  # ratios [0.5, 0.5], missing 0.2
    assert check.reference_ratios == pytest.approx([0.4, 0.4, 0.2, 0.0])
    assert check.value_of_bin("00") == pytest.approx(0.4)
    assert check.value_of_bin(UNSEEN_BIN) == 0.0
    assert check.value_of_bin("no-such-bin") == 0.0
    city = compile_feature(CITY)
    assert city.reference_ratios == pytest.approx([0.6, 0.3, 0.1, 0.0, 0.0])
    flag = compile_feature(FLAG)
    assert flag.reference_ratios == pytest.approx([0.75, 0.25, 0.0, 0.0])
    assert sum(flag.reference_ratios) == pytest.approx(1.0)


def test_counts_by_kind(prof: Profile) -> None:
    batch = full_row_batch(3, age=[None, "x", 100.0], city=["tokyo", "paris", None])
    batch.columns["extra"] = [0, 0, 0]
    report = Validator(prof).validate(batch)
    assert report.counts_by_kind() == {
        "missing": {"age": 1, "city": 1},
        "wrong_type": {"age": 1},
        "out_of_range": {"age": 1},
        "unknown_category": {"city": 1},
        "unknown_feature": {OTHER_BIN: 3},
    }
    assert report.n_violations == 8


def test_vectorize_threshold_picks_path(prof: Profile) -> None:
    # Both paths give the same answer; the threshold only decides which one runs.
    v = Validator(prof, vectorize_min_rows=2)
    small = v.validate(full_row_batch(1, age=[20.0]))
    big = v.validate(full_row_batch(2, age=[20.0, 20.0]))
    assert rows_of(small, "age", "out_of_range") == [0]
    assert rows_of(big, "age", "out_of_range") == [0, 1]


# --- property: plain Python and vectorised paths agree -------------------------------------

# Edges (2.5, 5, 7.5, 50), range limits (-5, 15) and their neighbours: where paths could differ.
BOUNDARIES = st.sampled_from(
    [0.0, -0.0, 2.5, 5.0, 5, 7.5, -5.0, -5, 15.0, 15, 50.0, 50, 15.000000000000002, -5.000000001]
)
# Pure numbers that numpy can hold: these columns take the numpy path.
FINITE_ISH = st.one_of(
    BOUNDARIES,
    st.integers(min_value=-20, max_value=60),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(min_value=-20, max_value=60),
    st.floats(allow_nan=True, allow_infinity=True),
)
NUMBERS = st.one_of(FINITE_ISH, st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1]))
SCALARS = st.one_of(
    NUMBERS,
    st.booleans(),
    st.none(),
    st.sampled_from(["paris", "lyon", "nice", "3", "a", "c", "zz", "yes", "no", "", "one two"]),
    st.text(max_size=12),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=2), SCALARS, max_size=1),
)
# Columns of one type: these take the C-level tally paths from TALLY_MIN_ROWS rows.
UNIFORM = [
    st.sampled_from(["paris", "lyon", "nice", "zz", "", "one two", "3"]),
    st.text(max_size=5),
    st.booleans(),
    st.integers(min_value=-1, max_value=3),
    st.floats(min_value=-4, max_value=14),
]
PROPERTY_PROFILE = profile([AGE, INCOME, CITY, TAG, FLAG, NOTE])
PROPERTY_VALIDATOR = Validator(PROPERTY_PROFILE, unknown_features="enforce")


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    n = draw(st.integers(min_value=0, max_value=25))
    columns: dict[str, list[Any]] = {}
    for name in PROPERTY_PROFILE.feature_names:
        if draw(st.integers(0, 9)) == 0:
            continue  # absent column
        element = draw(
            st.sampled_from(
                [FINITE_ISH, BOUNDARIES, NUMBERS, SCALARS, VALUES, st.none() | NUMBERS, *UNIFORM]
            )
        )
        columns[name] = draw(st.lists(element, min_size=n, max_size=n))
    if draw(st.booleans()):
        columns["extra"] = draw(st.lists(SCALARS, min_size=n, max_size=n))
    return Batch(n, columns)


def _same_floats(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        x == y and math.copysign(1.0, x) == math.copysign(1.0, y) for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_python_and_vectorized_paths_agree(batch: Batch) -> None:
    slow = PROPERTY_VALIDATOR.validate(batch, vectorize=False)
    fast = PROPERTY_VALIDATOR.validate(batch, vectorize=True)
    for name in PROPERTY_PROFILE.feature_names:
        a, b = slow.columns[name], fast.columns[name]
        assert a.bin_counts == b.bin_counts, name
        assert sum(a.bin_counts) == batch.n_rows, name
        assert a.violations == b.violations, name
        for rows in a.violations.values():
            assert rows == sorted(rows), name
        if name in ("age", "income"):
            assert _same_floats(a.clean, b.clean), name
    assert slow.violation_counts == fast.violation_counts
    assert slow.n_violations == fast.n_violations
    assert slow.rejected == fast.rejected

    def key(r: BatchReport) -> list[tuple[Any, ...]]:
        return sorted((d.row or -1, d.feature, d.kind, d.policy) for d in r.details)

    assert key(slow) == key(fast)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_tally_paths_agree_with_the_row_loop(batch: Batch) -> None:
    tallied = PROPERTY_VALIDATOR.validate(batch, vectorize=False)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(feature_checks, "TALLY_MIN_ROWS", 10**9)
        looped = PROPERTY_VALIDATOR.validate(batch, vectorize=False)
    for name in PROPERTY_PROFILE.feature_names:
        a, b = looped.columns[name], tallied.columns[name]
        assert a.bin_counts == b.bin_counts, name
        assert a.violations == b.violations, name
        assert _same_floats(a.clean, b.clean), name
