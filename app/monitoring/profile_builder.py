"""Build a reference profile from training columns (reading files is the CLI's job)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.errors import ProfileError
from app.monitoring.calibration import calibrate_thresholds
from app.monitoring.golden import pick_golden
from app.monitoring.profile import (
    N_QUANTILES,
    BooleanFeature,
    CategoricalFeature,
    Feature,
    Kind,
    ModelInfo,
    NumericFeature,
    PolicyMap,
    PredictionProfile,
    Profile,
    TextFeature,
)
from app.monitoring.values import boolean_value, category_key, is_missing, token_count, tokens

QUANTILE_NAMES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
DECILES = [i / 10 for i in range(1, 10)]


class FeatureOverride(BaseModel):
    """Per-column overrides from the schema file or flags."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = None
    ignore: bool = False
    required: bool | None = None
    policy: PolicyMap | None = None
    range_tolerance: float | None = Field(default=None, ge=0.0)


class BuildOptions(BaseModel):
    """How to build a profile. Every field has a sensible default."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=20, ge=1)
    """Categories kept with their own bin; the rest share `__other__`."""
    max_domain: int = Field(default=1000, ge=1)
    """Distinct categorical values remembered as 'seen in training'."""
    vocabulary_size: int = Field(default=1000, ge=1)
    text_min_tokens: float = 3.0
    """A string column whose values average at least this many tokens is text."""
    range_tolerance: float = Field(default=0.1, ge=0.0)
    max_prediction_classes: int = 50
    """An integer or string prediction with at most this many values is a class label."""
    reservoir_size: int = Field(default=0, ge=0)
    """Keep a raw random sample of this many values per numeric feature (0: none)."""
    features: dict[str, FeatureOverride] = Field(default_factory=dict)
    calibration_rows: int = Field(default=5000, ge=0)
    """Window size the distance thresholds (PSI, JS, Wasserstein, L-inf) are calibrated for,
    by bootstrapping windows from the training values (0: no calibration, fixed defaults)."""
    calibration_bootstraps: int = Field(default=200, ge=1)
    """Bootstrap windows per feature."""
    calibration_quantile: float = Field(default=0.99, gt=0.0, lt=1.0)
    """The quantile of each score's null distribution kept as the threshold."""


@dataclass
class BuildReport:
    """What the builder decided, for the CLI's summary table."""

    warnings: list[str] = field(default_factory=list)


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return values.tolist()  # type: ignore[no-any-return]
    return list(values)


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if not is_missing(v)]


def infer_kind(values: Sequence[Any], dtype: str, options: BuildOptions) -> Kind:
    """Guess a column's kind from its dtype and values."""
    present = _present(list(values))
    if dtype == "bool" or (present and all(type(v) is bool for v in present)):
        return "boolean"
    if dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float")):
        return "numeric"
    if present and all(type(v) in (int, float) for v in present):
        return "numeric"
    strings = [v for v in present if isinstance(v, str)]
    if strings:
        mean_tokens = sum(len(s.split()) for s in strings) / len(strings)
        if mean_tokens >= options.text_min_tokens:
            return "text"
    return "categorical"


def _quantile_dict(arr: np.ndarray[Any, Any]) -> dict[str, float]:
    qs = np.quantile(arr, list(QUANTILE_NAMES.values()))
    return {k: float(q) for k, q in zip(QUANTILE_NAMES, qs, strict=True)}


def _bins(arr: np.ndarray[Any, Any]) -> tuple[list[float], list[float]]:
    edges = np.unique(np.quantile(arr, DECILES))
    counts = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=len(edges) + 1)
    ratios = counts / counts.sum()
    return [float(e) for e in edges], _normalise(ratios.tolist())


def _normalise(ratios: list[float]) -> list[float]:
    rounded = [round(r, 12) for r in ratios]
    total = sum(rounded)
    return [r / total for r in rounded] if total else rounded


def _base(
    name: str, dtype: str, values: list[Any], override: FeatureOverride | None
) -> dict[str, Any]:
    n = len(values)
    n_missing = sum(1 for v in values if is_missing(v))
    ratio = n_missing / n if n else 0.0
    base: dict[str, Any] = {
        "name": name,
        "dtype": dtype,
        "missing_ratio": ratio,
        "required": n_missing == 0,
    }
    if override is not None:
        if override.required is not None:
            base["required"] = override.required
        if override.policy is not None:
            base["policy"] = override.policy
    return base


def _numeric(
    name: str,
    base: dict[str, Any],
    values: list[Any],
    override: FeatureOverride | None,
    options: BuildOptions,
    report: BuildReport,
    rng: np.random.Generator,
) -> NumericFeature:
    present = []
    for v in _present(values):
        if type(v) is bool or not isinstance(v, (int, float)):
            raise ProfileError(
                f"column '{name}' is numeric but holds {type(v).__name__} value {v!r}", field=name
            )
        present.append(float(v))
    arr = np.asarray(present, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        report.warnings.append(f"{name}: {int((~finite).sum())} non-finite values left out")
        arr = arr[finite]
    if arr.size == 0:
        raise ProfileError(f"numeric column '{name}' has no finite values", field=name)
    edges, ratios = _bins(arr)
    tolerance = options.range_tolerance
    if override is not None and override.range_tolerance is not None:
        tolerance = override.range_tolerance
    sample = None
    if options.reservoir_size:
        k = min(options.reservoir_size, arr.size)
        sample = [float(x) for x in rng.choice(arr, size=k, replace=False)]
    return NumericFeature(
        **base,
        min=float(arr.min()),
        max=float(arr.max()),
        mean=float(arr.mean()),
        std=float(arr.std()),
        quantiles=_quantile_dict(arr),
        quantiles_1001=[float(q) for q in np.quantile(arr, np.linspace(0.0, 1.0, N_QUANTILES))],
        bin_edges=edges,
        bin_ratios=ratios,
        range_tolerance=tolerance,
        sample=sample,
    )


def _categorical(
    name: str, base: dict[str, Any], values: list[Any], options: BuildOptions
) -> CategoricalFeature:
    keys = []
    for v in _present(values):
        key = category_key(v)
        if key is None:
            raise ProfileError(f"column '{name}' holds a non-scalar value {v!r}", field=name)
        keys.append(key)
    tally = Counter(keys)
    total = sum(tally.values())
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[: options.top_k]
    categories = {k: c / total for k, c in top} if total else {}
    other = 1.0 - sum(categories.values()) if total else 0.0
    return CategoricalFeature(
        **base,
        categories=categories,
        other_ratio=max(0.0, other),
        domain=[k for k, _ in ranked[: options.max_domain]],
        domain_complete=len(ranked) <= options.max_domain,
    )


def _boolean(name: str, base: dict[str, Any], values: list[Any]) -> BooleanFeature:
    flags = []
    for v in _present(values):
        b = boolean_value(v)
        if b is None:
            raise ProfileError(f"column '{name}' is boolean but holds {v!r}", field=name)
        flags.append(b)
    return BooleanFeature(**base, true_ratio=(sum(flags) / len(flags)) if flags else 0.0)


def _text(name: str, base: dict[str, Any], values: list[Any], options: BuildOptions) -> TextFeature:
    texts = [str(v) for v in _present(values)]
    token_lists = [tokens(t) for t in texts]
    tally = Counter(t for toks in token_lists for t in toks)
    vocabulary = [t for t, _ in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))]
    vocabulary = vocabulary[: options.vocabulary_size]
    vocab = set(vocabulary)
    n_tokens = sum(tally.values())
    oov = sum(c for t, c in tally.items() if t not in vocab)
    lengths = np.asarray([token_count(t) for t in texts] or [0], dtype=np.float64)
    edges, ratios = _bins(lengths)
    return TextFeature(
        **base,
        vocabulary=vocabulary,
        oov_rate=oov / n_tokens if n_tokens else 0.0,
        length_quantiles=_quantile_dict(lengths),
        bin_edges=edges,
        bin_ratios=ratios,
    )


def describe_column(
    name: str,
    values: Any,
    dtype: str,
    options: BuildOptions,
    report: BuildReport,
    kind: Kind | None = None,
    rng: np.random.Generator | None = None,
) -> Feature:
    """Profile one column (used for features and for the prediction)."""
    override = options.features.get(name)
    items = _as_list(values)
    if kind is None:
        kind = override.kind if override and override.kind else infer_kind(items, dtype, options)
    base = _base(name, dtype, items, override)
    if kind != "categorical" and not any(not is_missing(v) for v in items):
        # Nothing to describe: keep the column (its missing share is still monitored) as a
        # categorical feature with an empty domain, so any value it gets is "unseen".
        report.warnings.append(f"{name}: every value is missing; profiled as an empty category")
        kind = "categorical"
    if kind == "numeric":
        return _numeric(
            name, base, items, override, options, report, rng or np.random.default_rng(0)
        )
    if kind == "categorical":
        return _categorical(name, base, items, options)
    if kind == "boolean":
        return _boolean(name, base, items)
    return _text(name, base, items, options)


def _calibrated(
    feature: Feature, values: Any, options: BuildOptions, rng: np.random.Generator
) -> Feature:
    if not options.calibration_rows:
        return feature
    thresholds = calibrate_thresholds(
        feature,
        values,
        options.calibration_rows,
        n_boot=options.calibration_bootstraps,
        quantile=options.calibration_quantile,
        rng=rng,
    )
    return feature.model_copy(update={"drift_thresholds": thresholds}) if thresholds else feature


def _prediction_kind(values: list[Any], dtype: str, options: BuildOptions) -> Kind:
    present = _present(values)
    if dtype == "bool" or (present and all(type(v) is bool for v in present)):
        return "categorical"
    integral = all(
        type(v) is int or (type(v) is float and math.isfinite(v) and v == int(v)) for v in present
    )
    few = len(set(present)) <= options.max_prediction_classes
    if dtype.startswith("float") and not integral:
        return "numeric"
    if (integral or any(isinstance(v, str) for v in present)) and few:
        return "categorical"
    return "numeric" if all(type(v) in (int, float) for v in present) else "categorical"


def _task(
    dist: Feature, columns: Mapping[str, Any], target: str | None
) -> tuple[Literal["classification", "regression"] | None, str | None]:
    """How feedback labels will be scored: a numeric output in [0, 1] beside a two-class target
    is the probability of the target's larger class; other numeric outputs are regressions."""
    if not isinstance(dist, NumericFeature):
        return "classification", None
    if target is None or target not in columns:
        return None, None
    labels = {category_key(v) for v in _present(_as_list(columns[target]))} - {None}
    if len(labels) == 2 and dist.min >= 0.0 and dist.max <= 1.0:
        ordered = sorted(str(k) for k in labels)
        positive = next((k for k in ordered if boolean_value(k) is True), ordered[-1])
        return "classification", positive
    return "regression", None


def build_profile(
    columns: Mapping[str, Any],
    dtypes: Mapping[str, str],
    *,
    target: str | None,
    prediction: str | None = None,
    output_name: str | None = None,
    model: ModelInfo,
    data_hash: str,
    options: BuildOptions | None = None,
    ignore: Sequence[str] = (),
    golden_rows: int = 0,
) -> tuple[Profile, BuildReport]:
    """Build a profile from training columns.

    Args:
        columns: column name → values, in the training column order.
        dtypes: column name → dtype name (as pandas reports it).
        target: the label column (never a feature).
        prediction: a column with the model's outputs on this data, for the prediction section;
            without it the target stands in, with a warning.
        output_name: the output's name on the wire.
        model: model name, version and training time.
        data_hash: hash of the data file, recorded for provenance.
        options: build options and per-column overrides.
        ignore: columns to leave out (ids, timestamps).
        golden_rows: keep this many rows, spread over the data, with their `prediction` values
            as golden rows for parity probes (0: none; needs `prediction`).

    Raises:
        ProfileError: a named column is absent or cannot be profiled, or golden rows were
            asked for without a prediction column.
    """
    options = options or BuildOptions()
    report = BuildReport()
    if golden_rows and prediction is None:
        raise ProfileError("golden rows need the model's outputs: pass a prediction column")
    for name in [target, prediction, *ignore]:
        if name is not None and name not in columns:
            raise ProfileError(f"column '{name}' is not in the data", field=name)
    for name in options.features:
        if name not in columns:
            report.warnings.append(f"schema names column '{name}', which is not in the data")
    skip = {target, prediction, *ignore} | {n for n, o in options.features.items() if o.ignore}
    rng = np.random.default_rng(0)
    calibration_rng = np.random.default_rng(1)
    features = [
        _calibrated(
            describe_column(name, values, dtypes.get(name, "object"), options, report, rng=rng),
            values,
            options,
            calibration_rng,
        )
        for name, values in columns.items()
        if name not in skip
    ]
    if not features:
        raise ProfileError(
            "no feature columns left after removing target/prediction/ignored", field="features"
        )
    pred_section = None
    source_col = prediction or target
    if source_col is not None:
        if prediction is None:
            report.warnings.append(
                f"no --prediction column: the prediction reference is built from the target "
                f"'{target}' (labels are not model outputs; pass the model's predictions)"
            )
        values = _as_list(columns[source_col])
        dtype = dtypes.get(source_col, "object")
        kind = _prediction_kind(values, dtype, options)
        dist = describe_column(source_col, values, dtype, options, report, kind=kind)
        dist = _calibrated(dist, values, options, calibration_rng)
        if output_name:
            dist = dist.model_copy(update={"name": output_name})
        task, positive = _task(dist, columns, target)
        pred_section = PredictionProfile(
            output_name=output_name,
            source="prediction" if prediction else "target",
            distribution=dist,
            task=task,
            positive_class=positive,
        )
    n_rows = len(_as_list(next(iter(columns.values())))) if columns else 0
    golden = None
    if golden_rows and prediction is not None:
        names = [f.name for f in features]
        golden = pick_golden(columns, names, prediction, golden_rows, output_name)
        if len(golden.rows) < golden_rows:
            report.warnings.append(
                f"only {len(golden.rows)} rows have a prediction: {len(golden.rows)} golden rows"
            )
    profile = Profile(
        model=model,
        created_at=datetime.now(UTC),
        data_hash=data_hash,
        n_rows=n_rows,
        target=target,
        features=features,
        prediction=pred_section,
        golden=golden,
    )
    return profile, report
