"""TF Serving / KServe V1: `POST /v1/models/{name}:predict` with `instances` or `inputs`."""

from __future__ import annotations

from typing import Any

from app.errors import DecodeError
from app.monitoring.batch import Batch, Predictions
from app.protocols.json_body import check_unique_keys, loads, require_object
from app.protocols.tabular import doc_keys, from_columns, from_records, pick_output

NAME = "v1"


def decode_request(body: bytes, feature_order: list[str]) -> Batch:
    """Decode `{"instances": [...]}` (row objects or lists) or `{"inputs": ...}` (columns or rows).

    Raises:
        DecodeError: neither key is present, or the rows disagree with each other or the profile.
    """
    doc = require_object(loads(body))
    if "instances" in doc and "inputs" in doc:
        raise DecodeError("body has both 'instances' and 'inputs'; send one")
    if "instances" in doc:
        key = "instances"
        batch = from_records(doc[key], feature_order, key)
    elif "inputs" in doc:
        key = "inputs"
        inputs = doc[key]
        if isinstance(inputs, dict):
            batch = from_columns(inputs, key)
        else:
            batch = from_records(inputs, feature_order, key)
    else:
        raise DecodeError("body needs 'instances' or 'inputs'")
    check_unique_keys(body, doc_keys(doc, key))
    return batch


def decode_response(body: bytes, output_name: str | None, column: int | None) -> Predictions:
    """Decode `{"predictions": [...]}` (row format) or `{"outputs": ...}` (columnar)."""
    doc = require_object(loads(body), "response")
    if "predictions" in doc:
        rows = doc["predictions"]
        if not isinstance(rows, list):
            raise DecodeError("response 'predictions' must be a list")
        values = [pick_output(r, output_name, column) for r in rows]
        return Predictions(values, output_name or "predictions", _version(doc))
    if "outputs" in doc:
        outputs = doc["outputs"]
        if isinstance(outputs, dict):
            key = output_name if output_name in outputs else next(iter(outputs), None)
            if key is None:
                raise DecodeError("response 'outputs' is empty")
            outputs = outputs[key]
        if not isinstance(outputs, list):
            raise DecodeError("response 'outputs' must be a list or an object of lists")
        values = [pick_output(r, None, column) for r in outputs]
        return Predictions(values, output_name or "outputs", _version(doc))
    raise DecodeError("response has neither 'predictions' nor 'outputs'")


def _version(doc: dict[str, Any]) -> str | None:
    version = doc.get("model_version")
    return str(version) if version is not None else None
