"""Prediction quality from ground truth: how labels are compared with predictions, and the
metrics over a sliding window of labelled predictions.

Three tasks, chosen from the profile's prediction section (or configured):

- `classes`: the output is a class label; accuracy, precision, recall and F1 (of the positive
  class when there are two classes, macro-averaged otherwise).
- `probability`: the output is the probability of a positive class; the same at a threshold,
  plus log-loss, Brier score, ROC AUC and the expected calibration error (ECE) over reliability
  bins (of predictions near p, the share that were positive).
- `regression`: MAE, RMSE and bias (mean of prediction - label).

Labels and class predictions are compared as profile categories (`category_key`): 1, 1.0 and
"1" are one class.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.monitoring.profile import (
    BooleanFeature,
    CategoricalFeature,
    NumericFeature,
    PredictionProfile,
)
from app.monitoring.values import boolean_value, category_key, is_missing

Task = Literal["classes", "probability", "regression"]
OTHER_CLASS = "__other__"
EPS = 1e-15


@dataclass(frozen=True, slots=True)
class QualitySpec:
    """How one model's labels are scored."""

    task: Task
    positive: str = "1"
    """The positive class (probability task, and binary class tasks)."""
    threshold: float = 0.5
    classes: tuple[str, ...] = ()
    """Class labels from the profile (the confusion matrix's rows and columns, plus
    `__other__`); for the probability task `("1", "0")`: positive and negative."""
    calibration_bins: int = 10

    @property
    def binary(self) -> bool:
        return self.task == "probability" or (
            len(self.classes) <= 2 and self.positive in self.classes
        )


def quality_spec(
    prediction: PredictionProfile,
    task: Literal["auto", "classification", "regression"] = "auto",
    positive_class: str | None = None,
    threshold: float = 0.5,
    calibration_bins: int = 10,
) -> QualitySpec:
    """The scoring rule for a prediction section, with configured overrides (`task`,
    `positive_class`; `auto` follows the profile)."""
    dist = prediction.distribution
    chosen = prediction.task if task == "auto" else task
    positive = positive_class or prediction.positive_class or "1"
    if isinstance(dist, CategoricalFeature):
        return QualitySpec("classes", positive, threshold, tuple(dist.categories), calibration_bins)
    if isinstance(dist, BooleanFeature):
        return QualitySpec("classes", positive_class or "true", threshold, ("true", "false"))
    if isinstance(dist, NumericFeature) and chosen == "classification":
        return QualitySpec("probability", positive, threshold, ("1", "0"), calibration_bins)
    return QualitySpec("regression", positive, threshold, (), calibration_bins)


@dataclass(frozen=True, slots=True)
class Scored:
    """One labelled prediction, reduced to what the metrics need."""

    predicted: str | float
    """The predicted class (classes, probability: "1"/"0") or value (regression)."""
    actual: str | float
    """The true class or value."""
    score: float = math.nan
    """The probability of the positive class (probability task)."""


def _is_positive(label: Any, positive: str) -> bool | None:
    key = category_key(label)
    if key is None:
        return None
    if key == positive:
        return True
    if positive in ("1", "true"):
        as_bool = boolean_value(label)
        if as_bool is not None:
            return as_bool
    return False


def score_pair(spec: QualitySpec, prediction: Any, label: Any) -> Scored | str:
    """Reduce one (prediction, label) pair, or say why it cannot be scored."""
    if is_missing(label) or isinstance(label, (list, dict)):
        return "the label must be a number, a string or a boolean"
    if is_missing(prediction):
        return "the stored prediction is missing"
    if spec.task == "regression":
        if type(label) not in (int, float) or not math.isfinite(label):
            return "a regression label must be a finite number"
        if type(prediction) not in (int, float) or not math.isfinite(prediction):
            return "the stored prediction is not a finite number"
        return Scored(float(prediction), float(label))
    if spec.task == "probability":
        positive = _is_positive(label, spec.positive)
        if positive is None:
            return "the label is not a class"
        if type(prediction) not in (int, float) or not 0.0 <= prediction <= 1.0:
            return "the stored prediction is not a probability in [0, 1]"
        p = float(prediction)
        return Scored("1" if p >= spec.threshold else "0", "1" if positive else "0", p)
    actual = category_key(label)
    predicted = category_key(prediction)
    if actual is None or predicted is None:
        return "the label is not a class"
    return Scored(predicted, actual)


@dataclass
class QualityWindow:
    """The last `capacity` scored pairs of one model and the metrics over them (computed once
    per change: every scrape and the ML Test Score read them)."""

    spec: QualitySpec
    capacity: int = 1000
    min_rows: int = 30
    items: deque[Scored] = field(init=False)
    _added: int = field(init=False, default=0)
    _cached: tuple[int, dict[str, float]] = field(init=False, default=(-1, {}))

    def __post_init__(self) -> None:
        self.items = deque(maxlen=self.capacity)

    def add(self, scored: Scored) -> None:
        self.items.append(scored)
        self._added += 1

    def __len__(self) -> int:
        return len(self.items)

    def metrics(self) -> dict[str, float]:
        """Each metric of the task over the window (empty below `min_rows`; NaN when a metric
        is undefined, e.g. ROC AUC with one class)."""
        if len(self.items) < self.min_rows:
            return {}
        added, cached = self._cached
        if added != self._added:
            cached = compute_metrics(self.spec, list(self.items))
            self._cached = (self._added, cached)
        return dict(cached)


def compute_metrics(spec: QualitySpec, items: list[Scored]) -> dict[str, float]:
    """The task's metrics over scored pairs."""
    if spec.task == "regression":
        err = np.array([float(s.predicted) - float(s.actual) for s in items])
        return {
            "mae": float(np.mean(np.abs(err))),
            "rmse": float(math.sqrt(float(np.mean(err * err)))),
            "bias": float(np.mean(err)),
        }
    predicted = [str(s.predicted) for s in items]
    actual = [str(s.actual) for s in items]
    out = _class_metrics(spec, predicted, actual)
    if spec.task == "probability":
        p = np.array([s.score for s in items])
        y = np.array([1.0 if s.actual == "1" else 0.0 for s in items])
        clipped = np.clip(p, EPS, 1 - EPS)
        out["log_loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        out["brier"] = float(np.mean((p - y) ** 2))
        out["roc_auc"] = roc_auc(p, y)
        out["ece"] = expected_calibration_error(p, y, spec.calibration_bins)
    return out


def _class_metrics(spec: QualitySpec, predicted: list[str], actual: list[str]) -> dict[str, float]:
    n = len(actual)
    correct = sum(1 for a, b in zip(predicted, actual, strict=True) if a == b)
    out = {"accuracy": correct / n}
    classes = [spec.positive] if spec.binary else sorted(set(actual) | set(predicted))
    precisions, recalls, f1s = [], [], []
    for c in classes:
        tp = sum(1 for a, b in zip(predicted, actual, strict=True) if a == c and b == c)
        pp = sum(1 for a in predicted if a == c)
        ap = sum(1 for b in actual if b == c)
        precision = tp / pp if pp else 0.0
        recall = tp / ap if ap else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(f1)
    out["precision"] = float(np.mean(precisions))
    out["recall"] = float(np.mean(recalls))
    out["f1"] = float(np.mean(f1s))
    return out


def roc_auc(score: np.ndarray[Any, Any], positive: np.ndarray[Any, Any]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN with one
    class."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(score)
    return float((ranks[positive == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration_bin(p: float, bins: int) -> int:
    """The reliability bin of a probability: equal-width bins over [0, 1], 1.0 in the last."""
    return min(int(p * bins), bins - 1)


def calibration_bin_labels(bins: int) -> list[str]:
    """Bin labels: the upper edge of each bin (`0.1`, …, `1.0`)."""
    return [f"{(i + 1) / bins:g}" for i in range(bins)]


def expected_calibration_error(
    p: np.ndarray[Any, Any], y: np.ndarray[Any, Any], bins: int
) -> float:
    """Σ over bins of (share of rows in the bin) * |mean predicted - share positive|."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        k = int(mask.sum())
        if k:
            total += k / len(p) * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return total


__all__ = [
    "QualitySpec",
    "QualityWindow",
    "Scored",
    "calibration_bin",
    "compute_metrics",
    "quality_spec",
    "score_pair",
]
