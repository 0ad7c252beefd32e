"""Compare the model server's answers on golden rows with the outputs recorded at training time.

Numbers match within an absolute tolerance; class labels (strings, booleans) match when their
canonical text is equal, so `1`, `1.0` and `"1"` are one class. A missing or non-numeric answer
where a number was expected is a mismatch with an infinite difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.monitoring.values import category_key, is_missing

MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class RowMismatch:
    """One golden row whose answer differs from the recorded output."""

    row: int
    expected: Any
    actual: Any
    difference: float | None
    """Absolute difference for numbers (inf when no number came back); None for classes."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing every golden row."""

    rows: int
    mismatched: int
    max_abs_difference: float
    """Largest absolute difference over numeric rows (inf: a number was expected but not
    given; 0 when no row is numeric)."""
    examples: list[RowMismatch] = field(default_factory=list)
    """The first few mismatches, for the JSON report."""

    @property
    def ok(self) -> bool:
        return self.mismatched == 0


def _number(value: Any) -> float | None:
    t = type(value)
    if t is int or t is float:
        return float(value)
    return None


def compare_one(expected: Any, actual: Any, tolerance: float) -> tuple[bool, float | None]:
    """(matches, absolute difference or None for a class comparison) for one row."""
    if is_missing(expected):
        return is_missing(actual), None
    expected_num = _number(expected)
    actual_num = _number(actual)
    if type(expected) is float or (expected_num is not None and actual_num is not None):
        if actual_num is None or not math.isfinite(actual_num):
            return False, math.inf
        assert expected_num is not None
        diff = abs(actual_num - expected_num)
        return diff <= tolerance, diff
    if type(expected) is int and is_missing(actual):
        return False, math.inf
    key = category_key(expected)
    return key is not None and key == category_key(actual), None


def compare_outputs(expected: Sequence[Any], actual: Sequence[Any], tolerance: float) -> Comparison:
    """Compare row by row; a row without an answer (short response) is a mismatch."""
    mismatched = 0
    max_diff = 0.0
    examples: list[RowMismatch] = []
    for i, want in enumerate(expected):
        got = actual[i] if i < len(actual) else None
        ok, diff = compare_one(want, got, tolerance)
        if diff is not None and diff > max_diff:
            max_diff = diff
        if not ok:
            mismatched += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(RowMismatch(i, want, got, diff))
    return Comparison(len(expected), mismatched, max_diff, examples)
