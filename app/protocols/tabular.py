"""Row- and column-shaped payloads (shared by V1 and MLflow) → columns."""

from __future__ import annotations

from typing import Any

from app.errors import DecodeError
from app.monitoring.batch import Batch
from app.protocols.json_body import count_keys


def from_records(records: Any, feature_order: list[str], where: str) -> Batch:
    """A list of rows: objects keyed by feature, or lists in the profile's feature order.

    A key absent from an object row is a missing value in that row.
    """
    if not isinstance(records, list):
        raise DecodeError(f"'{where}' must be a list of rows")
    n = len(records)
    if n == 0:
        return Batch(0, {}, source=f"{where}:empty")
    first = records[0]
    if isinstance(first, dict):
        columns: dict[str, list[Any]] = {}
        for i, row in enumerate(records):
            if not isinstance(row, dict):
                raise DecodeError(
                    f"'{where}' row {i} is {type(row).__name__}; rows must all be objects"
                )
            for key, value in row.items():
                col = columns.get(key)
                if col is None:
                    col = columns[key] = [None] * n
                col[i] = value
        return Batch(n, columns, source=f"{where}:objects")
    if isinstance(first, list):
        width = len(feature_order)
        for i, row in enumerate(records):
            if not isinstance(row, list):
                raise DecodeError(
                    f"'{where}' row {i} is {type(row).__name__}; rows must all be lists"
                )
            if len(row) != width:
                raise DecodeError(
                    f"'{where}' row {i} has {len(row)} values; the profile has {width} features "
                    f"({', '.join(feature_order[:8])}{', …' if width > 8 else ''})"
                )
        cols = {name: [row[j] for row in records] for j, name in enumerate(feature_order)}
        return Batch(n, cols, source=f"{where}:lists")
    if len(feature_order) == 1:
        for i, row in enumerate(records):
            if isinstance(row, (list, dict)):
                raise DecodeError(f"'{where}' row {i} mixes shapes with the first row")
        return Batch(n, {feature_order[0]: list(records)}, source=f"{where}:scalars")
    raise DecodeError(
        f"'{where}' rows must be objects or lists; got {type(first).__name__} "
        f"but the profile has {len(feature_order)} features"
    )


def row_keys(records: list[Any]) -> int:
    """The number of keys in rows that `from_records` accepted (0 unless they are objects)."""
    if records and type(records[0]) is dict:
        return sum(map(len, records))
    return 0


def doc_keys(doc: dict[str, Any], key: str) -> int:
    """Keys of a decoded request whose rows (or columns) sit under `key`."""
    payload = doc[key]
    rows = len(payload) if type(payload) is dict else row_keys(payload)
    return len(doc) + rows + sum(count_keys(v) for k, v in doc.items() if k != key)


def from_columns(columns: Any, where: str) -> Batch:
    """An object of columns: feature → list of values (a scalar is a one-row column)."""
    if not isinstance(columns, dict):
        raise DecodeError(f"'{where}' must be an object of columns")
    out: dict[str, list[Any]] = {}
    n: int | None = None
    for name, values in columns.items():
        col = values if isinstance(values, list) else [values]
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise DecodeError(
                f"'{where}' column '{name}' has {len(col)} values; earlier columns have {n}"
            )
        out[name] = col
    return Batch(n or 0, out, source=f"{where}:columns")


def pick_output(value: Any, output_name: str | None, column: int | None) -> Any:
    """One prediction row → the monitored scalar (dict by output name, list by column)."""
    if isinstance(value, dict):
        if output_name is not None and output_name in value:
            value = value[output_name]
        elif len(value) == 1 or output_name is None:
            value = next(iter(value.values()), None)
        else:
            return None
    if isinstance(value, list):
        if not value:
            return None
        if len(value) == 1:
            return value[0]
        idx = column if column is not None else len(value) - 1
        return value[idx] if -len(value) <= idx < len(value) else None
    return value
