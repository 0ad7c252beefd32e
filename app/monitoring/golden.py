"""Golden rows for parity probes: a few training rows with the model's outputs at training time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.errors import ProfileError
from app.monitoring.profile import GoldenSet
from app.monitoring.values import is_missing


def json_native(value: Any) -> Any:
    """A JSON-native copy of one value: numpy scalars → Python, NaN/±inf → None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def spread_indices(candidates: Sequence[int], n: int) -> list[int]:
    """`n` of the candidate indices, evenly spread from the first to the last (deterministic)."""
    if n <= 0 or not candidates:
        return []
    if n >= len(candidates):
        return list(candidates)
    positions = np.linspace(0, len(candidates) - 1, n).round().astype(int)
    return [candidates[int(p)] for p in positions]


def pick_golden(
    columns: Mapping[str, Any],
    features: Sequence[str],
    prediction: str,
    n: int,
    output_name: str | None = None,
) -> GoldenSet:
    """Pick `n` rows spread over the data (only rows with a prediction) with their outputs.

    Raises:
        ProfileError: the prediction column is absent or has no value at all.
    """
    if prediction not in columns:
        raise ProfileError(f"column '{prediction}' is not in the data", field=prediction)
    outputs = list(columns[prediction])
    present = [i for i, v in enumerate(outputs) if not is_missing(json_native(v))]
    chosen = spread_indices(present, n)
    if not chosen:
        raise ProfileError(
            f"golden rows need predictions, but column '{prediction}' has none", field="golden"
        )
    data = {name: list(columns[name]) for name in features}
    rows = [{name: json_native(data[name][i]) for name in features} for i in chosen]
    return GoldenSet(
        rows=rows, predictions=[json_native(outputs[i]) for i in chosen], output_name=output_name
    )
