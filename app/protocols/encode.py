"""Rows → an inference request body for each protocol (the parity prober's requests).

`columns` keeps each feature by name (V2: one tensor per feature with the pandas codec hint;
V1: row objects; MLflow: a split frame); `matrix` sends one 2-D block in the profile's feature
order (V2: an [n, F] FP64 tensor `input-0`; V1: `instances` of lists; MLflow: `inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from app.errors import ConfigError

RequestFormat = Literal["columns", "matrix"]
MATRIX_INPUT = "input-0"


def v2_datatype(values: Sequence[Any]) -> str:
    """The V2 datatype for one column: BOOL, INT64, FP64 (floats or ints with gaps) or BYTES."""
    present = [v for v in values if v is not None]
    if not present:
        return "FP64"
    types = {type(v) for v in present}
    if types == {bool}:
        return "BOOL"
    if types == {int}:
        return "INT64" if len(present) == len(values) else "FP64"
    if types <= {int, float}:
        return "FP64"
    return "BYTES"


def _v2_value(value: Any, datatype: str) -> Any:
    if datatype == "FP64" and value is not None:
        return float(value)
    if datatype == "BYTES" and value is not None and not isinstance(value, str):
        return str(value)
    return value


def _matrix_value(value: Any, feature: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, int, float)):
        return float(value)
    raise ConfigError(
        f"parity request_format 'matrix' needs numeric features; '{feature}' holds {value!r}"
    )


def rows_to_matrix(rows: Sequence[Mapping[str, Any]], feature_order: Sequence[str]) -> list[Any]:
    """Rows as lists of floats in feature order (booleans → 0/1, missing → None).

    Raises:
        ConfigError: a feature holds a value that is not a number.
    """
    return [[_matrix_value(row.get(f), f) for f in feature_order] for row in rows]


def encode_v2(
    rows: Sequence[Mapping[str, Any]],
    feature_order: Sequence[str],
    request_format: RequestFormat = "columns",
    output_name: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An Open Inference Protocol request; asks for `output_name` when given."""
    n = len(rows)
    doc: dict[str, Any] = {}
    if request_id is not None:
        doc["id"] = request_id
    if request_format == "matrix":
        data = rows_to_matrix(rows, feature_order)
        width = len(feature_order)
        doc["inputs"] = [
            {"name": MATRIX_INPUT, "shape": [n, width], "datatype": "FP64", "data": data}
        ]
    else:
        doc["parameters"] = {"content_type": "pd"}
        inputs = []
        for f in feature_order:
            column = [row.get(f) for row in rows]
            dt = v2_datatype(column)
            data = [_v2_value(v, dt) for v in column]
            inputs.append({"name": f, "shape": [n], "datatype": dt, "data": data})
        doc["inputs"] = inputs
    if output_name is not None:
        doc["outputs"] = [{"name": output_name}]
    return doc


def encode_v1(
    rows: Sequence[Mapping[str, Any]],
    feature_order: Sequence[str],
    request_format: RequestFormat = "columns",
) -> dict[str, Any]:
    """`{"instances": ...}`: row objects (columns) or lists in feature order (matrix)."""
    if request_format == "matrix":
        return {"instances": rows_to_matrix(rows, feature_order)}
    return {"instances": [{f: row.get(f) for f in feature_order} for row in rows]}


def encode_mlflow(
    rows: Sequence[Mapping[str, Any]],
    feature_order: Sequence[str],
    request_format: RequestFormat = "columns",
) -> dict[str, Any]:
    """`{"dataframe_split": ...}` (columns) or `{"inputs": [[...], ...]}` (matrix)."""
    if request_format == "matrix":
        return {"inputs": rows_to_matrix(rows, feature_order)}
    data = [[row.get(f) for f in feature_order] for row in rows]
    return {"dataframe_split": {"columns": list(feature_order), "data": data}}


def encode_rows(
    protocol: str,
    rows: Sequence[Mapping[str, Any]],
    feature_order: Sequence[str],
    request_format: RequestFormat = "columns",
    output_name: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """A JSON request body for `protocol` (v2, v1, mlflow) holding `rows` (NaN → null).

    Raises:
        ConfigError: unknown protocol, or `matrix` with a non-numeric feature value.
    """
    if protocol == "v2":
        doc = encode_v2(rows, feature_order, request_format, output_name, request_id)
    elif protocol == "v1":
        doc = encode_v1(rows, feature_order, request_format)
    elif protocol == "mlflow":
        doc = encode_mlflow(rows, feature_order, request_format)
    else:
        raise ConfigError(f"unknown protocol {protocol!r} (expected v2, v1 or mlflow)")
    return orjson.dumps(doc)
