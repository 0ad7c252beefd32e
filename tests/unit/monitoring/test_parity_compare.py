"""Golden-row comparison: numbers within tolerance, classes by canonical text."""

from __future__ import annotations

import math

import pytest

from app.monitoring.parity_compare import MAX_EXAMPLES, compare_one, compare_outputs


def test_numbers_within_tolerance_match() -> None:
    cmp = compare_outputs([0.1, 0.5, 0.9], [0.1 + 1e-9, 0.5, 0.9 - 5e-7], 1e-6)
    assert cmp.ok
    assert cmp.rows == 3
    assert cmp.mismatched == 0
    assert cmp.max_abs_difference == pytest.approx(5e-7)
    assert cmp.examples == []


def test_numbers_past_tolerance_mismatch_with_examples() -> None:
    cmp = compare_outputs([0.1, 0.5, 0.9], [0.1, 0.7, 0.9], 1e-6)
    assert not cmp.ok
    assert cmp.mismatched == 1
    assert cmp.max_abs_difference == pytest.approx(0.2)
    (ex,) = cmp.examples
    assert (ex.row, ex.expected, ex.actual) == (1, 0.5, 0.7)
    assert ex.difference == pytest.approx(0.2)


def test_tolerance_is_inclusive() -> None:
    assert compare_one(1.0, 1.5, 0.5) == (True, 0.5)
    assert compare_one(1.0, 1.5, 0.4999)[0] is False


@pytest.mark.parametrize("actual", [None, math.nan, math.inf, "0.5", [0.5]])
def test_missing_or_non_number_where_a_number_was_expected_is_a_mismatch(actual: object) -> None:
    ok, diff = compare_one(0.5, actual, 1.0)
    assert not ok
    assert diff == math.inf
    cmp = compare_outputs([0.5, 0.25], [0.5, actual], 1.0)
    assert cmp.mismatched == 1
    assert cmp.max_abs_difference == math.inf


def test_int_labels_compare_as_classes_across_types() -> None:
    assert compare_one(1, 1, 0.0) == (True, 0.0)
    assert compare_one(1, 1.0, 0.0) == (True, 0.0)
    assert compare_one(1, "1", 0.0) == (True, None)
    assert compare_one("1", 1, 0.0) == (True, None)
    assert compare_one(1, 0, 0.0) == (False, 1.0)
    assert compare_one(1, "0", 0.0) == (False, None)
    assert compare_one(1, None, 0.0) == (False, math.inf)


def test_string_and_boolean_classes() -> None:
    assert compare_one("approve", "approve", 0.0) == (True, None)
    assert compare_one("approve", "reject", 0.0) == (False, None)
    assert compare_one("approve", None, 0.0) == (False, None)
    assert compare_one(True, True, 0.0) == (True, None)
    assert compare_one(True, "true", 0.0) == (True, None)
    assert compare_one(True, False, 0.0) == (False, None)


def test_class_mismatches_count_but_leave_max_difference_alone() -> None:
    cmp = compare_outputs(["a", "b", "c"], ["a", "x", "y"], 0.0)
    assert cmp.mismatched == 2
    assert cmp.max_abs_difference == 0.0


def test_short_response_counts_missing_rows_as_mismatches() -> None:
    cmp = compare_outputs([0.1, 0.2, 0.3], [0.1], 1e-6)
    assert cmp.mismatched == 2
    assert cmp.max_abs_difference == math.inf
    assert [e.row for e in cmp.examples] == [1, 2]


def test_examples_are_capped() -> None:
    cmp = compare_outputs([0.0] * 20, [1.0] * 20, 0.1)
    assert cmp.mismatched == 20
    assert len(cmp.examples) == MAX_EXAMPLES


def test_expected_missing_matches_only_missing() -> None:
    assert compare_one(None, None, 0.0) == (True, None)
    assert compare_one(None, math.nan, 0.0) == (True, None)
    assert compare_one(None, 0.3, 0.0) == (False, None)
