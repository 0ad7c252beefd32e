"""Hand-made profile features for the monitoring tests (explicit numbers, no builder)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.monitoring.profile import (
    N_QUANTILES,
    BooleanFeature,
    CategoricalFeature,
    Feature,
    ModelInfo,
    NumericFeature,
    PolicyMap,
    PredictionProfile,
    Profile,
    TextFeature,
)


def numeric(
    name: str,
    *,
    lo: float = 0.0,
    hi: float = 100.0,
    edges: list[float] | None = None,
    ratios: list[float] | None = None,
    required: bool = True,
    missing_ratio: float = 0.0,
    range_tolerance: float = 0.1,
    policy: PolicyMap | None = None,
    mean: float | None = None,
    std: float = 1.0,
    quantiles_1001: list[float] | None = None,
) -> NumericFeature:
    edges = [25.0, 50.0, 75.0] if edges is None else edges
    ratios = [1.0 / (len(edges) + 1)] * (len(edges) + 1) if ratios is None else ratios
    q = quantiles_1001 or [float(x) for x in np.linspace(lo, hi, N_QUANTILES)]
    return NumericFeature(
        name=name,
        dtype="float64",
        required=required,
        missing_ratio=missing_ratio,
        policy=policy or PolicyMap(),
        min=lo,
        max=hi,
        mean=(lo + hi) / 2 if mean is None else mean,
        std=std,
        quantiles={"p50": (lo + hi) / 2},
        quantiles_1001=q,
        bin_edges=edges,
        bin_ratios=ratios,
        range_tolerance=range_tolerance,
    )


def categorical(
    name: str,
    categories: dict[str, float],
    domain: list[str],
    *,
    other_ratio: float = 0.0,
    domain_complete: bool = True,
    required: bool = True,
    missing_ratio: float = 0.0,
    policy: PolicyMap | None = None,
) -> CategoricalFeature:
    return CategoricalFeature(
        name=name,
        required=required,
        missing_ratio=missing_ratio,
        policy=policy or PolicyMap(),
        categories=categories,
        other_ratio=other_ratio,
        domain=domain,
        domain_complete=domain_complete,
    )


def boolean(
    name: str, *, true_ratio: float = 0.5, required: bool = True, missing_ratio: float = 0.0
) -> BooleanFeature:
    return BooleanFeature(
        name=name, required=required, missing_ratio=missing_ratio, true_ratio=true_ratio
    )


def text(
    name: str,
    *,
    edges: list[float] | None = None,
    required: bool = True,
    vocabulary: list[str] | None = None,
) -> TextFeature:
    edges = [2.0, 5.0] if edges is None else edges
    return TextFeature(
        name=name,
        required=required,
        vocabulary=vocabulary or ["the", "cat"],
        oov_rate=0.5,
        length_quantiles={"p50": 3.0},
        bin_edges=edges,
        bin_ratios=[1.0 / (len(edges) + 1)] * (len(edges) + 1),
    )


def profile(features: list[Feature], prediction: PredictionProfile | None = None) -> Profile:
    return Profile(
        model=ModelInfo(name="m"),
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        data_hash="sha256:test",
        n_rows=100,
        features=features,
        prediction=prediction,
    )


def as_json(obj: Any) -> Any:
    """A pydantic model as the plain JSON document a profile file holds."""
    return obj.model_dump(mode="json")
