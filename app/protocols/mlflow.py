"""MLflow scoring server: `POST /invocations` with JSON (`dataframe_split`, `dataframe_records`,
`instances`, `inputs`) or CSV (`text/csv`)."""

from __future__ import annotations

import csv
import io
from typing import Any

from app.errors import DecodeError
from app.monitoring.batch import Batch, Predictions
from app.protocols.json_body import check_unique_keys, count_keys, loads, require_object
from app.protocols.tabular import doc_keys, from_columns, from_records, pick_output, row_keys

NAME = "mlflow"
_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def decode_request(body: bytes, feature_order: list[str], content_type: str = "") -> Batch:
    """Decode one of MLflow's input formats into columns.

    Raises:
        DecodeError: no (or more than one) known format key, or malformed data.
    """
    if content_type and content_type.partition(";")[0].strip().lower() == "text/csv":
        return _from_csv(body)
    doc = require_object(loads(body))
    present = [k for k in _KEYS if k in doc]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise DecodeError(f"body needs exactly one of {', '.join(_KEYS)} (found: {found})")
    key = present[0]
    payload = doc[key]
    if key == "dataframe_split":
        batch = _from_split(payload, feature_order)
    elif key == "dataframe_records":
        batch = from_records(payload, feature_order, key)
    elif isinstance(payload, dict):
        batch = from_columns(payload, key)
    else:
        batch = from_records(payload, feature_order, key)
    if key == "dataframe_split":
        data = payload["data"]
        counted = len(doc) + len(payload) + row_keys(data)
        counted += sum(count_keys(v) for k, v in payload.items() if k != "data")
        counted += sum(count_keys(v) for k, v in doc.items() if k != key)
    else:
        counted = doc_keys(doc, key)
    check_unique_keys(body, counted)
    return batch


def _from_split(split: Any, feature_order: list[str]) -> Batch:
    split = require_object(split, "'dataframe_split'")
    data = split.get("data")
    if not isinstance(data, list):
        raise DecodeError("'dataframe_split' needs a 'data' list of rows")
    columns = split.get("columns")
    if columns is None:
        return from_records(data, feature_order, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise DecodeError("'dataframe_split.columns' must be a list of strings")
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DecodeError(f"'dataframe_split.columns' names '{dup}' twice")
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise DecodeError(
                f"'dataframe_split.data' row {i} has {size} values; columns has {width}"
            )
    cols = {name: [row[j] for row in data] for j, name in enumerate(columns)}
    return Batch(len(data), cols, source="mlflow:dataframe_split")


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _from_csv(body: bytes) -> Batch:
    try:
        text = body.decode("utf-8-sig")  # a leading byte order mark is skipped, as pandas does
    except UnicodeDecodeError as exc:
        raise DecodeError(f"CSV body is not UTF-8: {exc}") from None
    # strict: an unterminated quote or text after a closing quote is an error, as for pandas.
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
        # Blank lines (e.g. a trailing one) are no rows, as for pandas.read_csv (MLflow's parser).
        records = [row for row in reader if row]
    except StopIteration:
        raise DecodeError("CSV body cannot be read: no header row") from None
    except csv.Error as exc:
        raise DecodeError(f"CSV body cannot be read at line {reader.line_num}: {exc}") from None
    if not header:
        raise DecodeError("CSV body's first line is empty; it must be the header row")
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise DecodeError(f"CSV header names '{dup}' twice")
    cols: dict[str, list[Any]] = {name: [] for name in header}
    for i, row in enumerate(records):
        if len(row) != len(header):
            raise DecodeError(f"CSV row {i} has {len(row)} fields; the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            cols[name].append(_cell(cell))
    return Batch(len(records), cols, source="mlflow:csv")


def decode_response(body: bytes, output_name: str | None, column: int | None) -> Predictions:
    """Decode `{"predictions": [...]}` (MLflow 2+) or a bare list (MLflow 1)."""
    doc = loads(body)
    if isinstance(doc, dict):
        if "predictions" not in doc:
            raise DecodeError("response has no 'predictions'")
        rows = doc["predictions"]
    else:
        rows = doc
    if isinstance(rows, dict):  # a DataFrame in "columns" orientation
        key = output_name if output_name in rows else next(iter(rows), None)
        col = rows.get(key) if key is not None else None
        rows = list(col.values()) if isinstance(col, dict) else col
    if not isinstance(rows, list):
        raise DecodeError("response predictions must be a list")
    values = [pick_output(r, output_name, column) for r in rows]
    return Predictions(values, output_name or "predictions")
