"""Quality metrics agree with scikit-learn's on the same labels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from app.monitoring.profile import CategoricalFeature, NumericFeature, PredictionProfile
from app.monitoring.quality import (
    QualitySpec,
    QualityWindow,
    Scored,
    calibration_bin,
    calibration_bin_labels,
    compute_metrics,
    quality_spec,
    score_pair,
)


def scored(spec: QualitySpec, preds: list[Any], labels: list[Any]) -> list[Scored]:
    out = []
    for p, y in zip(preds, labels, strict=True):
        s = score_pair(spec, p, y)
        assert isinstance(s, Scored), s
        out.append(s)
    return out


def numeric_profile(task: str | None) -> PredictionProfile:
    q = [i / 1000 for i in range(1001)]
    dist = NumericFeature(
        name="p", kind="numeric", dtype="float64", min=0.0, max=1.0, mean=0.5, std=0.29,
        quantiles={"p50": 0.5}, quantiles_1001=q,
        bin_edges=[0.5], bin_ratios=[0.5, 0.5],
    )  # fmt: skip
    return PredictionProfile(distribution=dist, task=task)  # type: ignore[arg-type]


def categorical_profile(classes: list[str]) -> PredictionProfile:
    dist = CategoricalFeature(
        name="c", kind="categorical", dtype="object",
        categories={c: 1 / len(classes) for c in classes}, domain=classes,
    )  # fmt: skip
    return PredictionProfile(distribution=dist)


def test_spec_follows_the_profile_and_overrides() -> None:
    assert quality_spec(numeric_profile(None)).task == "regression"
    assert quality_spec(numeric_profile("classification")).task == "probability"
    assert quality_spec(numeric_profile(None), task="classification").task == "probability"
    spec = quality_spec(categorical_profile(["0", "1"]))
    assert (spec.task, spec.binary, spec.classes) == ("classes", True, ("0", "1"))
    assert not quality_spec(categorical_profile(["a", "b", "c"])).binary


def test_binary_probability_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 2000), 0, 1)
    spec = quality_spec(numeric_profile("classification"))
    got = compute_metrics(spec, scored(spec, p.tolist(), y.tolist()))
    pred = (p >= 0.5).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    # ECE from the same equal-width bins scikit-learn's calibration_curve uses.
    true, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount([calibration_bin(x, 10) for x in p], minlength=10)
    weights = counts[counts > 0] / len(p)
    assert got["ece"] == pytest.approx(float(np.sum(weights * np.abs(true - mean))))


def test_labels_in_other_spellings_count_as_the_positive_class() -> None:
    spec = quality_spec(numeric_profile("classification"))
    for label, positive in [
        (1, True),
        (True, True),
        ("1", True),
        (1.0, True),
        (0, False),
        (False, False),
        ("no", False),
    ]:
        s = score_pair(spec, 0.9, label)
        assert isinstance(s, Scored)
        assert (s.actual == "1") is positive, label
    assert score_pair(spec, 1.5, 1) == "the stored prediction is not a probability in [0, 1]"
    assert score_pair(spec, 0.5, None) == "the label must be a number, a string or a boolean"


@pytest.mark.parametrize("classes", [["0", "1"], ["red", "green", "blue"]])
def test_class_metrics_match_sklearn(classes: list[str]) -> None:
    rng = np.random.default_rng(5)
    y = rng.choice(classes, 1500).tolist()
    pred = [t if rng.random() < 0.7 else str(rng.choice(classes)) for t in y]
    spec = quality_spec(categorical_profile(classes), positive_class="1")
    got = compute_metrics(spec, scored(spec, pred, y))
    if spec.binary:
        kw: dict[str, Any] = {"pos_label": "1"}
    else:
        kw = {"average": "macro", "zero_division": 0}
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred, **kw))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, **kw))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, **kw))


def test_integer_class_predictions_meet_string_labels() -> None:
    spec = quality_spec(categorical_profile(["0", "1"]))
    s = score_pair(spec, 1, "1")
    assert isinstance(s, Scored)
    assert s.predicted == s.actual == "1"
    s = score_pair(spec, 1.0, 1)
    assert isinstance(s, Scored)
    assert s.predicted == s.actual


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(100, 20, 1000)
    pred = y + rng.normal(3, 5, 1000)
    spec = quality_spec(numeric_profile(None))
    got = compute_metrics(spec, scored(spec, pred.tolist(), y.tolist()))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    assert got["bias"] == pytest.approx(float(np.mean(pred - y)))
    assert score_pair(spec, 1.0, "abc") == "a regression label must be a finite number"
    assert score_pair(spec, None, 1.0) == "the stored prediction is missing"


def test_window_slides_and_waits_for_min_rows() -> None:
    spec = quality_spec(categorical_profile(["0", "1"]))
    window = QualityWindow(spec, capacity=50, min_rows=10)
    for _ in range(9):
        window.add(Scored("1", "1"))
    assert window.metrics() == {}
    window.add(Scored("1", "1"))
    assert window.metrics()["accuracy"] == 1.0
    assert window.metrics() is not window.metrics()  # a copy of the cached values
    for _ in range(50):
        window.add(Scored("0", "1"))  # the good ones slide out
    assert len(window) == 50
    assert window.metrics()["accuracy"] == 0.0  # recomputed after the change


def test_roc_auc_is_undefined_with_one_class() -> None:
    spec = quality_spec(numeric_profile("classification"))
    got = compute_metrics(spec, scored(spec, [0.2, 0.8, 0.6], [1, 1, 1]))
    assert math.isnan(got["roc_auc"])


def test_calibration_bins() -> None:
    assert calibration_bin_labels(10) == [
        "0.1",
        "0.2",
        "0.3",
        "0.4",
        "0.5",
        "0.6",
        "0.7",
        "0.8",
        "0.9",
        "1",
    ]
    assert [calibration_bin(p, 10) for p in (0.0, 0.099, 0.1, 0.95, 1.0)] == [0, 0, 1, 9, 9]
