"""Row-by-row agreement between the primary model's predictions and a shadow candidate's.

Three ways to compare, chosen from the profile's prediction section (`compare_mode`):
`classes` (labels must be equal), `threshold` (a probability output: the predicted class at the
threshold must be equal) and `numbers` (equal within an absolute tolerance). `auto`, for
profiles without a prediction section, compares numbers as numbers and anything else as labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.monitoring.profile import PredictionProfile
from app.monitoring.values import category_key

CompareMode = Literal["classes", "threshold", "numbers", "auto"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing one response pair."""

    agree: int = 0
    """Rows where both sides gave a comparable value and they agree."""
    disagree: int = 0
    """Rows where both sides gave a comparable value and they differ."""
    incomparable: int = 0
    """Rows where either side is missing, non-finite or not of the expected kind."""
    shape_mismatch: bool = False
    """The two sides hold different numbers of rows: nothing was compared."""
    differences: tuple[float, ...] = ()
    """|shadow - primary| of every row where both sides are finite numbers."""

    @property
    def comparable(self) -> bool:
        """True when every row was compared (the response pair is fully usable)."""
        return not self.shape_mismatch and self.incomparable == 0


@dataclass(frozen=True, slots=True)
class ComparisonSpec:
    """Which output of a model's responses to compare, and how."""

    output_name: str | None = None
    """The output's name on the wire (None: the first output)."""
    column: int | None = None
    """The column of a 2-D output (None: the last)."""
    mode: CompareMode = "auto"

    @classmethod
    def of(cls, prediction: PredictionProfile | None) -> ComparisonSpec:
        """The spec for a model with this prediction section (None: no section)."""
        if prediction is None:
            return cls()
        return cls(prediction.output_name, prediction.column, compare_mode(prediction))


def compare_mode(prediction: PredictionProfile | None) -> CompareMode:
    """How predictions of a model compare, from its profile's prediction section.

    Categorical, boolean and text outputs are classes; a numeric output is a probability
    compared at a threshold when the task is `classification`, else a number.
    """
    if prediction is None:
        return "auto"
    if prediction.distribution.kind != "numeric":
        return "classes"
    return "threshold" if prediction.task == "classification" else "numbers"


def _number(value: Any) -> float | None:
    # bool is an int subclass but not a score; strings are not parsed (a codec's job).
    if type(value) is int or type(value) is float:
        x = float(value)
        return x if math.isfinite(x) else None
    return None


def _label(value: Any) -> str | None:
    if type(value) is float and not math.isfinite(value):
        return None
    return category_key(value)


def compare(
    primary: Sequence[Any],
    shadow: Sequence[Any],
    mode: CompareMode,
    tolerance: float = 0.0,
    threshold: float = 0.5,
) -> Comparison:
    """Compare two responses row by row.

    Args:
        primary: the primary's value per row.
        shadow: the shadow's value per row.
        mode: how values compare (see `compare_mode`).
        tolerance: largest absolute difference of agreeing numbers (`numbers`, `auto`).
        threshold: a probability at or above it predicts the positive class (`threshold`).

    Returns:
        Counts of agreeing, disagreeing and incomparable rows, and the numeric differences.
    """
    if len(primary) != len(shadow):
        return Comparison(shape_mismatch=True)
    agree = disagree = incomparable = 0
    diffs: list[float] = []
    for p, s in zip(primary, shadow, strict=True):
        pn, sn = _number(p), _number(s)
        numeric = pn is not None and sn is not None
        if mode == "classes" or (mode == "auto" and not numeric):
            pk, sk = _label(p), _label(s)
            if pk is None or sk is None:
                incomparable += 1
                continue
            same = pk == sk
        elif pn is None or sn is None:
            incomparable += 1
            continue
        else:
            diff = abs(sn - pn)
            diffs.append(diff)
            if mode == "threshold":
                same = (pn >= threshold) == (sn >= threshold)
            else:
                same = diff <= tolerance
        if same:
            agree += 1
        else:
            disagree += 1
    return Comparison(agree, disagree, incomparable, False, tuple(diffs))
