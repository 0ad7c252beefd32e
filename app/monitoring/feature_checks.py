"""Per-feature checks compiled from the profile: classify each value into a bin and a violation.

Each check has two paths with identical results: plain Python (cheapest for a handful of rows)
and a vectorised one (numpy, or C-level counting) for batches. `tests/unit/monitoring` property-
tests that they agree.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.monitoring.profile import (
    MISSING_BIN,
    OTHER_BIN,
    UNSEEN_BIN,
    BooleanFeature,
    CategoricalFeature,
    Feature,
    NumericFeature,
    PolicyMap,
    TextFeature,
    ViolationKind,
)
from app.monitoring.values import boolean_value, category_key, is_missing, token_count

_NUMBER_TYPES = frozenset({int, float})
_MEMO_TYPES = (str, bool, int)
_STR = {str}
TALLY_MIN_ROWS = 8
"""From this many rows, a categorical, boolean or text column of one type is counted in C
(Counter) and each distinct value classified once; violations are then located row by row.
(Numeric columns: a plain loop measured faster than C-level passes below `vectorize_min_rows`.)"""
MAX_MEMO = 4096
"""Distinct string, bool and int values whose classification a check remembers."""


@dataclass(slots=True)
class ColumnResult:
    """What one column of one batch held, for one feature."""

    bin_counts: list[int]
    violations: dict[ViolationKind, list[int]] = field(default_factory=dict)
    """Violation kind → the rows that have it (all rows, uncapped)."""
    clean: list[float] | None = None
    """Numeric features: the finite values; text: word counts (for windows and statistics)."""

    def add(self, kind: ViolationKind, row: int) -> None:
        rows = self.violations.get(kind)
        if rows is None:
            self.violations[kind] = [row]
        else:
            rows.append(row)


class FeatureCheck(ABC):
    """Base of the compiled checks. `bin_labels` is fixed at compile time (bounded cardinality)."""

    name: str
    kind: str
    required: bool
    policy: PolicyMap
    bin_labels: list[str]
    reference_ratios: list[float]
    missing_bin: int
    unseen_bin: int

    def _init_common(self, feature: Feature, kind: str) -> None:
        self.name = feature.name
        self.kind = kind
        self.required = feature.required
        self.policy = feature.policy

    def check(self, values: list[Any], vectorize: bool) -> ColumnResult:
        """Classify every value of a column (`vectorize` picks the batch path)."""
        if vectorize:
            return self.check_vectorized(values)
        return self.check_python(values)

    @abstractmethod
    def check_python(self, values: list[Any]) -> ColumnResult:
        """Row-by-row classification (cheapest for a handful of rows)."""

    @abstractmethod
    def check_vectorized(self, values: list[Any]) -> ColumnResult:
        """Batch classification; identical results to `check_python`."""

    def absent(self, n_rows: int) -> ColumnResult:
        """The column is not in the request at all: every row is missing."""
        counts = [0] * len(self.bin_labels)
        counts[self.missing_bin] = n_rows
        result = ColumnResult(counts)
        if self.required and n_rows:
            result.violations["missing"] = list(range(n_rows))
        return result

    def value_of_bin(self, label: str) -> float:
        """The reference share of a bin label (0 for unknown labels)."""
        try:
            return self.reference_ratios[self.bin_labels.index(label)]
        except ValueError:
            return 0.0


class BinnedCheck(FeatureCheck):
    """A check whose values fall into the profile's bins `00`, `01`, … (numeric, text length)."""

    edges: list[float]

    def _init_value_bins(self, ratios: list[float], missing_ratio: float) -> None:
        n_value_bins = len(self.edges) + 1
        self.bin_labels = [*_index_bins(n_value_bins), MISSING_BIN, UNSEEN_BIN]
        present = 1.0 - missing_ratio
        self.reference_ratios = [r * present for r in ratios] + [missing_ratio, 0.0]
        self.missing_bin = n_value_bins
        self.unseen_bin = n_value_bins + 1


def _index_bins(n_value_bins: int) -> list[str]:
    width = max(2, len(str(n_value_bins - 1)))
    return [str(i).zfill(width) for i in range(n_value_bins)]


class NumericCheck(BinnedCheck):
    """Numbers: missing, wrong_type (bools, strings, lists), non_finite, out_of_range."""

    def __init__(self, feature: NumericFeature) -> None:
        self._init_common(feature, "numeric")
        self.edges = list(feature.bin_edges)
        self._edges_np = np.asarray(self.edges, dtype=np.float64)
        slack = feature.range_tolerance * (feature.max - feature.min)
        self.low = feature.min - slack
        self.high = feature.max + slack
        self._init_value_bins(feature.bin_ratios, feature.missing_ratio)

    def check_python(self, values: list[Any]) -> ColumnResult:
        counts = [0] * len(self.bin_labels)
        result = ColumnResult(counts, clean=[])
        clean = result.clean
        assert clean is not None
        edges, low, high = self.edges, self.low, self.high
        isfinite = math.isfinite
        for row, v in enumerate(values):
            t = type(v)
            if t is float or t is int:
                if t is float:
                    x = v
                else:
                    try:
                        x = float(v)
                    except OverflowError:  # an int too large for a float64
                        x = math.inf
                if not isfinite(x):
                    counts[self.unseen_bin] += 1
                    result.add("non_finite", row)
                    continue
                counts[bisect_left(edges, x)] += 1
                if x < low or x > high:
                    result.add("out_of_range", row)
                clean.append(x)
            elif v is None:
                counts[self.missing_bin] += 1
                if self.required:
                    result.add("missing", row)
            else:
                counts[self.unseen_bin] += 1
                result.add("wrong_type", row)
        return result

    def check_vectorized(self, values: list[Any]) -> ColumnResult:
        types = set(map(type, values))
        has_none = type(None) in types
        if not types - {type(None)} <= _NUMBER_TYPES:
            return self.check_python(values)
        try:
            arr = np.asarray(values, dtype=np.float64)  # None becomes NaN: masked below
        except OverflowError:
            return self.check_python(values)
        counts = [0] * len(self.bin_labels)
        result = ColumnResult(counts)
        present: np.ndarray[Any, Any] | None = None
        if has_none:
            none = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            counts[self.missing_bin] = int(none.sum())
            if self.required:
                result.violations["missing"] = np.flatnonzero(none).tolist()
            present = ~none
        finite = np.isfinite(arr)
        if present is not None:
            bad_mask = present & ~finite
            finite_or_none = finite | ~present
        else:
            bad_mask = ~finite
            finite_or_none = finite
        if not finite_or_none.all():
            bad = np.flatnonzero(bad_mask)
            result.violations["non_finite"] = bad.tolist()
            counts[self.unseen_bin] = int(bad.size)
        arr_ok = arr[finite] if not finite.all() else arr
        bins = np.searchsorted(self._edges_np, arr_ok, side="left")
        n_value_bins = len(self.edges) + 1
        for i, c in enumerate(np.bincount(bins, minlength=n_value_bins).tolist()):
            counts[i] = c
        oor = finite & ((arr < self.low) | (arr > self.high))
        if oor.any():
            result.violations["out_of_range"] = np.flatnonzero(oor).tolist()
        result.clean = arr_ok.tolist()
        return result


class DistinctValueCheck(FeatureCheck):
    """A check that classifies each value on its own (categories, booleans): the batch path
    counts distinct values in C and classifies each distinct value once."""

    _memo: dict[Any, tuple[int, ViolationKind | None]]

    @abstractmethod
    def classify(self, value: Any) -> tuple[int, ViolationKind | None]:
        """(bin index, violation kind or None) of one value."""

    def _classified(self, value: Any, t: type) -> tuple[int, ViolationKind | None]:
        """`classify(value)`, memoised for strings, bools and ints: the profile bounds the
        classes, MAX_MEMO the keys. True == 1, so non-strings are keyed with their type."""
        if t not in _MEMO_TYPES:
            return self.classify(value)
        key = value if t is str else (t, value)
        hit = self._memo.get(key)
        if hit is None:
            hit = self.classify(value)
            if len(self._memo) < MAX_MEMO:
                self._memo[key] = hit
        return hit

    def check_python(self, values: list[Any]) -> ColumnResult:
        if len(values) >= TALLY_MIN_ROWS:
            types = set(map(type, values))
            if len(types) == 1 and (t := types.pop()) in _MEMO_TYPES:
                return self._tally(values, t)
        counts = [0] * len(self.bin_labels)
        result = ColumnResult(counts)
        classified = self._classified
        for row, v in enumerate(values):
            b, kind = classified(v, type(v))
            counts[b] += 1
            if kind is not None:
                result.add(kind, row)
        return result

    def check_vectorized(self, values: list[Any]) -> ColumnResult:
        # (type, value) pairs keep True, 1 and 1.0 apart.
        pairs = list(zip(map(type, values), values, strict=True))
        try:
            return self._tally(pairs, None)
        except TypeError:  # unhashable values (lists, dicts): the row-by-row path names them
            return self.check_python(values)

    def _tally(self, keys: list[Any], one_type: type | None) -> ColumnResult:
        """Count distinct keys in C and classify each once; rows are looked up only for the
        (rare) distinct keys that are violations. Keys are the values themselves (all of
        `one_type`) or, with `one_type` None, (type, value) pairs."""
        counts = [0] * len(self.bin_labels)
        result = ColumnResult(counts)
        bad: dict[Any, ViolationKind] = {}
        for key, n in Counter(keys).items():
            t, value = (one_type, key) if one_type is not None else key
            b, kind = self._classified(value, t)
            counts[b] += n
            if kind is not None:
                bad[key] = kind
        for row, key in enumerate(keys) if bad else ():
            found = bad.get(key)
            if found is not None:
                result.add(found, row)
        return result


class CategoricalCheck(DistinctValueCheck):
    """Categories: top-K bins, `__other__` for rarer training values, `__unseen__` for new ones."""

    def __init__(self, feature: CategoricalFeature) -> None:
        self._init_common(feature, "categorical")
        self._memo = {}
        top = list(feature.categories)
        self.bin_labels = [*top, OTHER_BIN, UNSEEN_BIN, MISSING_BIN]
        present = 1.0 - feature.missing_ratio
        self.reference_ratios = [feature.categories[c] * present for c in top] + [
            feature.other_ratio * present,
            0.0,
            feature.missing_ratio,
        ]
        self.other_bin = len(top)
        self.unseen_bin = len(top) + 1
        self.missing_bin = len(top) + 2
        self.flag_unseen = feature.domain_complete
        # key → bin index for every known value; unseen keys are looked up once per batch.
        self.lookup: dict[str, int] = dict.fromkeys(feature.domain, self.other_bin)
        for i, c in enumerate(top):
            self.lookup[c] = i

    def classify(self, value: Any) -> tuple[int, ViolationKind | None]:
        if is_missing(value):
            return self.missing_bin, ("missing" if self.required else None)
        key = category_key(value)
        if key is None:
            return self.unseen_bin, "wrong_type"
        b = self.lookup.get(key)
        if b is not None:
            return b, None
        if self.flag_unseen:
            return self.unseen_bin, "unknown_category"
        return self.other_bin, None


class BooleanCheck(DistinctValueCheck):
    """Booleans: true/false (and 0/1, 'yes'/'no'); anything else is `wrong_type`."""

    def __init__(self, feature: BooleanFeature) -> None:
        self._init_common(feature, "boolean")
        self._memo = {}
        self.bin_labels = ["false", "true", UNSEEN_BIN, MISSING_BIN]
        present = 1.0 - feature.missing_ratio
        self.reference_ratios = [
            (1.0 - feature.true_ratio) * present,
            feature.true_ratio * present,
            0.0,
            feature.missing_ratio,
        ]
        self.unseen_bin = 2
        self.missing_bin = 3

    def classify(self, value: Any) -> tuple[int, ViolationKind | None]:
        if is_missing(value):
            return 3, ("missing" if self.required else None)
        flag = boolean_value(value)
        if flag is None:
            return 2, "wrong_type"
        return (1 if flag else 0), None


class TextCheck(BinnedCheck):
    """Free text: binned by token count; non-strings are `wrong_type`."""

    def __init__(self, feature: TextFeature) -> None:
        self._init_common(feature, "text")
        self.edges = list(feature.bin_edges)
        self._init_value_bins(feature.bin_ratios, feature.missing_ratio)
        self.vocabulary = frozenset(feature.vocabulary)

    def check_python(self, values: list[Any]) -> ColumnResult:
        counts = [0] * len(self.bin_labels)
        if len(values) >= TALLY_MIN_ROWS and set(map(type, values)) == _STR:
            tokens = {v: float(token_count(v)) for v in set(values)}
            for n, c in Counter(map(tokens.__getitem__, values)).items():
                counts[bisect_left(self.edges, n)] += c
            return ColumnResult(counts, clean=list(map(tokens.__getitem__, values)))
        words: list[float] = []
        result = ColumnResult(counts, clean=words)
        for row, v in enumerate(values):
            if type(v) is str:
                n = token_count(v)
                counts[bisect_left(self.edges, n)] += 1
                words.append(float(n))
            elif is_missing(v):
                counts[self.missing_bin] += 1
                if self.required:
                    result.add("missing", row)
            else:
                counts[self.unseen_bin] += 1
                result.add("wrong_type", row)
        return result

    def check_vectorized(self, values: list[Any]) -> ColumnResult:
        return self.check_python(values)


def compile_feature(feature: Feature) -> FeatureCheck:
    """Build the hot-path check for one profile feature."""
    if isinstance(feature, NumericFeature):
        return NumericCheck(feature)
    if isinstance(feature, CategoricalFeature):
        return CategoricalCheck(feature)
    if isinstance(feature, BooleanFeature):
        return BooleanCheck(feature)
    return TextCheck(feature)
