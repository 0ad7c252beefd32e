"""The demo model: a scikit-learn pipeline that predicts loan default, a buggy variant, and a
retrained candidate (the demo's shadow model).

`purpose` (free text) is not a model input; the pipeline drops it. Inputs arrive as columns of
plain Python values (what a JSON tensor holds) and are coerced here, so a value of the wrong
type raises `ValueError` (a model server answers 400).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.demo.data import BOOLEAN, CATEGORICAL, NUMERIC, TARGET, generate

MODEL_NAME = "loan"
GOOD_VERSION = "v1"
BUGGY_VERSION = "v2-buggy"
CANDIDATE_VERSION = "v1.1-candidate"
CANDIDATE_C = 0.05
"""The candidate's inverse regularisation strength (the good model uses scikit-learn's 1.0)."""
CANDIDATE_SEED_OFFSET = 1000
"""The candidate is trained on fresh data: `generate(rows, seed + CANDIDATE_SEED_OFFSET)`."""
MODEL_INPUTS = [*NUMERIC, *CATEGORICAL, *BOOLEAN]
"""The columns the pipeline reads (every feature but `purpose`)."""
MISSING_CATEGORY = "__missing__"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class Model(Protocol):
    """What the model server needs from a model: class labels and P(default)."""

    def predict(self, rows: dict[str, list[Any]]) -> tuple[list[int], list[float]]: ...


def _numbers(name: str, values: list[Any]) -> list[float]:
    out: list[float] = []
    for v in values:
        if v is None:
            out.append(math.nan)
        elif type(v) in (int, float):
            out.append(float(v))
        else:
            raise ValueError(f"feature '{name}' needs numbers; got {v!r}")
    return out


def _categories(name: str, values: list[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is None:
            out.append(MISSING_CATEGORY)
        elif isinstance(v, (str, int, float)):
            out.append(str(v))
        else:
            raise ValueError(f"feature '{name}' needs category values; got {v!r}")
    return out


def _flags(name: str, values: list[Any]) -> list[float]:
    out: list[float] = []
    for v in values:
        if v is None:
            out.append(math.nan)
        elif isinstance(v, bool) or (type(v) in (int, float) and v in (0, 1)):
            out.append(float(v))
        elif isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            out.append(1.0 if v.strip().lower() in _TRUE else 0.0)
        else:
            raise ValueError(f"feature '{name}' needs booleans; got {v!r}")
    return out


def frame(rows: dict[str, list[Any]]) -> pd.DataFrame:
    """Coerce columns of wire values into the pipeline's input frame.

    Raises:
        ValueError: an input is absent, columns differ in length, or a value has the wrong type.
    """
    missing = [name for name in MODEL_INPUTS if name not in rows]
    if missing:
        raise ValueError(f"missing model inputs: {', '.join(missing)}")
    lengths = {len(rows[name]) for name in MODEL_INPUTS}
    if len(lengths) != 1:
        raise ValueError("model inputs have different numbers of rows")
    data: dict[str, Any] = {}
    for name in NUMERIC:
        data[name] = np.asarray(_numbers(name, rows[name]), dtype=np.float64)
    for name in CATEGORICAL:
        data[name] = np.asarray(_categories(name, rows[name]), dtype=object)
    for name in BOOLEAN:
        data[name] = np.asarray(_flags(name, rows[name]), dtype=np.float64)
    return pd.DataFrame(data, columns=MODEL_INPUTS)


def build_pipeline(c: float = 1.0) -> Pipeline:
    """The untrained pipeline: impute+scale numbers, one-hot categories, flags as floats, then a
    logistic regression with inverse regularisation strength `c`."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("flags", SimpleImputer(strategy="most_frequent"), BOOLEAN),
        ],
        remainder="drop",
    )
    return Pipeline(
        [("preprocess", preprocess), ("classify", LogisticRegression(C=c, max_iter=1000))]
    )


def train(columns: dict[str, list[Any]] | None = None, seed: int = 0, c: float = 1.0) -> Pipeline:
    """Fit the pipeline (regularisation `c`) on `columns` (default: `generate(5000, seed)`)."""
    data = columns if columns is not None else generate(5000, seed=seed)
    pipeline = build_pipeline(c)
    pipeline.fit(frame(data), np.asarray(data[TARGET], dtype=np.int64))
    return pipeline


def train_candidate(seed: int = 0, n_rows: int = 5000) -> Pipeline:
    """The candidate release the demo runs as a shadow: the same pipeline retrained on fresh data
    with stronger regularisation. About as accurate as the good model; agrees with it on ~96% of
    rows (and, being a sound model, disagrees with the buggy one on most rows)."""
    return train(generate(n_rows, seed=seed + CANDIDATE_SEED_OFFSET), c=CANDIDATE_C)


def accuracy(predicted: list[int], labels: list[int]) -> float:
    """Share of rows whose predicted class equals the label (nan without rows)."""
    if not labels:
        return math.nan
    return sum(1 for p, y in zip(predicted, labels, strict=True) if p == y) / len(labels)


def predict(model: Pipeline, rows: dict[str, list[Any]]) -> tuple[list[int], list[float]]:
    """Class labels (0/1) and P(default) for columns of wire values.

    Raises:
        ValueError: the inputs cannot be coerced (see `frame`).
    """
    x = frame(rows)
    if len(x) == 0:
        return [], []
    proba = model.predict_proba(x)[:, 1]
    classes = (proba >= 0.5).astype(np.int64)
    return [int(c) for c in classes], [float(p) for p in proba]


class GoodModel:
    """The trained pipeline behind the `Model` interface."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def predict(self, rows: dict[str, list[Any]]) -> tuple[list[int], list[float]]:
        return predict(self.pipeline, rows)


class BuggyModel:
    """A broken release: the same pipeline with its score inverted (P' = 1 - P).

    Most applicants are now predicted to default: the prediction distribution flips while the
    inputs stay clean, which only output monitoring can catch. Every class prediction is the
    opposite of the good model's, so against the true labels its accuracy is one minus the good
    model's (about 0.19 against 0.81 on the demo data): ground-truth feedback shows the drop.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def predict(self, rows: dict[str, list[Any]]) -> tuple[list[int], list[float]]:
        _, proba = predict(self.pipeline, rows)
        inverted = [1.0 - p for p in proba]
        return [int(p >= 0.5) for p in inverted], inverted
