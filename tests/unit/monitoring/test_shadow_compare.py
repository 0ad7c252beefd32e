"""Row-by-row comparison of shadow and primary predictions, and the mode a profile implies."""

from __future__ import annotations

import math

import pytest

from app.monitoring.profile import PredictionProfile
from app.monitoring.shadow_compare import ComparisonSpec, compare, compare_mode
from tests.unit.monitoring.factories import boolean, categorical, numeric


def test_classes_compare_as_profile_categories() -> None:
    # 1, 1.0 and "1" are one category (as in the profile); labels are never subtracted.
    result = compare(["a", "b", 1, 1.0, True], ["a", "c", "1", 1, True], "classes")
    assert (result.agree, result.disagree, result.incomparable) == (4, 1, 0)
    assert result.differences == ()
    assert result.comparable


def test_class_numbers_are_not_differences() -> None:
    result = compare([0, 1, 2], [0, 2, 2], "classes", tolerance=5.0)
    assert (result.agree, result.disagree) == (2, 1)
    assert result.differences == ()


def test_numbers_agree_within_the_tolerance() -> None:
    result = compare([1.0, 2.0, 3, -4.0], [1.05, 2.2, 3.0, -3.95], "numbers", tolerance=0.1)
    assert (result.agree, result.disagree, result.incomparable) == (3, 1, 0)
    assert result.differences == pytest.approx((0.05, 0.2, 0.0, 0.05))


def test_numbers_with_zero_tolerance_must_be_equal() -> None:
    result = compare([0.5, 0.5], [0.5, 0.5000001], "numbers")
    assert (result.agree, result.disagree) == (1, 1)


def test_probabilities_compare_by_the_class_at_the_threshold() -> None:
    # At or above the threshold is the positive class on both sides.
    result = compare([0.2, 0.6, 0.49, 0.5, 0.9], [0.4, 0.4, 0.51, 0.5, 0.99], "threshold")
    assert (result.agree, result.disagree) == (3, 2)
    assert result.differences == pytest.approx((0.2, 0.2, 0.02, 0.0, 0.09))
    custom = compare([0.2, 0.6, 0.35], [0.4, 0.4, 0.3], "threshold", threshold=0.3)
    assert (custom.agree, custom.disagree) == (2, 1)


@pytest.mark.parametrize("mode", ["numbers", "threshold"])
def test_missing_and_non_finite_numbers_are_incomparable(mode: str) -> None:
    primary = [0.7, None, 0.7, math.nan, math.inf, True, "0.7"]
    shadow = [0.7, 0.7, None, 0.7, 0.7, 0.7, 0.7]
    result = compare(primary, shadow, mode)  # type: ignore[arg-type]
    assert (result.agree, result.disagree, result.incomparable) == (1, 0, 6)
    assert result.differences == (0.0,)
    assert not result.comparable


def test_missing_classes_are_incomparable() -> None:
    result = compare(["a", None, None, math.nan], [None, "a", None, "a"], "classes")
    assert (result.agree, result.disagree, result.incomparable) == (0, 0, 4)
    assert not result.comparable


def test_auto_compares_numbers_as_numbers_and_the_rest_as_labels() -> None:
    result = compare([1, "x", 0.5, "y", None], [1.0, "x", 0.7, 2, 1], "auto", tolerance=0.1)
    assert (result.agree, result.disagree, result.incomparable) == (2, 2, 1)
    assert result.differences == pytest.approx((0.0, 0.2))


@pytest.mark.parametrize("mode", ["classes", "threshold", "numbers", "auto"])
def test_different_row_counts_compare_nothing(mode: str) -> None:
    result = compare([0.5, 0.5, 0.5], [0.5, 0.5], mode)  # type: ignore[arg-type]
    assert result.shape_mismatch
    assert (result.agree, result.disagree, result.incomparable) == (0, 0, 0)
    assert not result.comparable


def test_empty_responses_are_comparable() -> None:
    assert compare([], [], "numbers").comparable


def test_mode_follows_the_profiles_prediction_section() -> None:
    score = numeric("score", lo=0.0, hi=1.0, edges=[0.25, 0.5, 0.75])
    classes = categorical("label", {"no": 0.6, "yes": 0.4}, ["no", "yes"])
    assert compare_mode(None) == "auto"
    assert compare_mode(PredictionProfile(distribution=classes)) == "classes"
    assert compare_mode(PredictionProfile(distribution=boolean("flag"))) == "classes"
    assert compare_mode(PredictionProfile(distribution=score)) == "numbers"
    assert compare_mode(PredictionProfile(distribution=score, task="regression")) == "numbers"
    proba = PredictionProfile(
        distribution=score, task="classification", positive_class="yes", output_name="p", column=1
    )
    assert compare_mode(proba) == "threshold"
    assert ComparisonSpec.of(proba) == ComparisonSpec("p", 1, "threshold")
    assert ComparisonSpec.of(None) == ComparisonSpec(None, None, "auto")
