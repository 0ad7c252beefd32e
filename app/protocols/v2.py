"""Open Inference Protocol / KServe V2, JSON tensors.

Requests carry either one tensor per feature (by name, shape [n] or [n, 1]) or a single 2-D
tensor [n, F] whose columns follow the profile's feature order. Tensors not named after a
feature are kept as unknown columns (one value per row, or a list when a row holds several).
Bodies in the binary tensor extension are read by `app.protocols.v2_binary`, which shares
this module's tensor checks and column assembly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from app.errors import DecodeError
from app.monitoring.batch import Batch, Predictions
from app.protocols.json_body import check_unique_keys, count_keys, loads, require_object

NAME = "v2"

DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }
)


def _flatten(data: Any, where: str | int, name: str) -> list[Any]:
    if type(data) is not list:
        return [data]
    if list not in set(map(type, data)):  # flat already (the common case), checked in C
        return data
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    depth_limit = 32
    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, list):
            if len(stack) >= depth_limit:
                raise DecodeError(
                    f"{_where(where)} '{name}': 'data' is nested deeper than {depth_limit} levels"
                )
            stack.append(iter(item))
        else:
            out.append(item)
    return out


_ABSENT = object()


def _valid_shape(shape: list[Any]) -> bool:
    for d in shape:  # noqa: SIM110 (a plain loop is cheaper than all() over a generator)
        if type(d) is not int or d < 0:
            return False
    return True


class Tensor:
    """One decoded input or output tensor."""

    __slots__ = ("datatype", "flat", "name", "shape")

    def __init__(self, name: str, shape: list[int], datatype: str, flat: list[Any]) -> None:
        self.name = name
        self.shape = shape
        self.datatype = datatype
        self.flat = flat

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def per_row(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    def column(self, j: int = 0) -> list[Any]:
        """Values of column j of a 2-D view [rows, per_row]."""
        width = self.per_row
        if width == 1:
            return self.flat
        return self.flat[j::width]

    def row_values(self) -> list[Any]:
        """One value per row: the scalar, or the row's list when it holds several."""
        width = self.per_row
        if width == 1:
            return self.flat
        return [self.flat[i * width : (i + 1) * width] for i in range(self.rows)]


BinaryReader = Callable[[str, list[int], str], list[Any]]
"""(name, shape, datatype) → the tensor's flat values, read from a binary body's data."""


def parse_tensor(raw: Any, where: str | int, binary: BinaryReader | None = None) -> Tensor:
    """Validate one tensor object of a request or response (messages built only on error).

    `where` names the tensor in messages: a description, or the index of a request input.
    With `binary`, a tensor without 'data' takes its values from it.
    """
    if type(raw) is not dict:
        raise DecodeError(f"{_where(where)} must be an object")
    name = raw.get("name")
    if type(name) is not str or not name:
        raise DecodeError(f"{_where(where)} needs a non-empty string 'name'")
    shape = raw.get("shape")
    if type(shape) is not list or not _valid_shape(shape):
        raise DecodeError(
            f"{_where(where)} '{name}': 'shape' must be a list of non-negative integers"
        )
    datatype = raw.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPES:
        raise DecodeError(f"{_where(where)} '{name}': unknown datatype {datatype!r}")
    data = raw.get("data", _ABSENT)
    if data is not _ABSENT:
        flat = _flatten(data, where, name)
    elif binary is not None:
        flat = binary(name, shape, datatype)
    else:
        raise DecodeError(_no_data(raw, where, name))
    expected = shape[0] if len(shape) == 1 else math.prod(shape)
    if len(flat) != expected:
        raise DecodeError(
            f"{_where(where)} '{name}': shape {shape} needs {expected} values but 'data' holds "
            f"{len(flat)}"
        )
    return Tensor(name, shape, datatype, flat)


def _where(where: str | int) -> str:
    return f"inputs[{where}]" if type(where) is int else str(where)


def _no_data(raw: dict[str, Any], where: str | int, name: str) -> str:
    params = raw.get("parameters")
    if type(params) is dict and "binary_data_size" in params:
        body = "request" if type(where) is int else "response"
        return (
            f"{_where(where)} '{name}' holds binary data (parameters.binary_data_size) but the "
            f"{body} has no Inference-Header-Content-Length header saying where its JSON ends"
        )
    return f"{_where(where)} '{name}' has no 'data'"


def decode_request(body: bytes, feature_order: list[str]) -> Batch:
    """Decode an inference request into columns.

    Raises:
        DecodeError: the body is not a V2 inference request, or its tensors disagree.
    """
    doc = require_object(loads(body))
    inputs = inputs_of(doc)
    batch = assemble([parse_tensor(t, i) for i, t in enumerate(inputs)], feature_order)
    check_unique_keys(body, request_keys(doc, inputs))
    return batch


def inputs_of(doc: dict[str, Any]) -> list[Any]:
    """The request's 'inputs' list (non-empty)."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise DecodeError("body needs a non-empty 'inputs' list")
    return inputs


def assemble(tensors: list[Tensor], feature_order: list[str]) -> Batch:
    """The request's columns: one tensor per feature, or one [n, F] matrix."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DecodeError(f"input '{dup}' appears more than once")
    features = set(feature_order)
    if len(tensors) == 1 and tensors[0].name not in features:
        return _from_matrix(tensors[0], feature_order)
    return _from_tensors(tensors, features)


def request_keys(doc: dict[str, Any], inputs: list[dict[str, Any]]) -> int:
    """Object keys of a decoded request, not looking inside the tensors' data."""
    total = len(doc)
    for key, value in doc.items():
        if key != "inputs":
            total += count_keys(value)
    for raw in inputs:
        total += len(raw)
        params = raw.get("parameters")
        if params is not None:
            total += count_keys(params)
    return total


def _from_tensors(tensors: list[Tensor], features: set[str]) -> Batch:
    n = tensors[0].rows
    columns: dict[str, list[Any]] = {}
    for t in tensors:
        if t.rows != n:
            raise DecodeError(
                f"input '{t.name}' has {t.rows} rows but input '{tensors[0].name}' has {n}"
            )
        if t.name in features:
            if t.per_row != 1:
                raise DecodeError(
                    f"input '{t.name}' has shape {t.shape}; a feature tensor must be [n] or [n, 1]"
                )
            columns[t.name] = t.flat
        else:
            columns[t.name] = t.row_values()
    return Batch(n, columns, source="v2:tensor-per-feature")


def _from_matrix(t: Tensor, feature_order: list[str]) -> Batch:
    width = len(feature_order)
    if len(t.shape) == 1 and width == 1:
        return Batch(t.rows, {feature_order[0]: t.flat}, source="v2:single-feature")
    if len(t.shape) != 2 or t.shape[1] != width:
        raise DecodeError(
            f"input '{t.name}' is not a feature name, so it must be a 2-D tensor [n, {width}] "
            f"with columns in the profile's feature order; its shape is {t.shape}"
        )
    columns = {name: t.column(j) for j, name in enumerate(feature_order)}
    return Batch(t.rows, columns, source="v2:matrix")


def decode_response(body: bytes, output_name: str | None, column: int | None) -> Predictions:
    """Decode an inference response and pick the monitored output.

    Raises:
        DecodeError: the body is not a V2 inference response or lacks the output.
    """
    doc = require_object(loads(body), "response")
    outputs = outputs_of(doc)
    chosen = None
    for i, raw in enumerate(outputs):
        if not isinstance(raw, dict):
            raise DecodeError(f"outputs[{i}] must be an object")
        if output_name is None or raw.get("name") == output_name:
            chosen = parse_tensor(raw, f"outputs[{i}]")
            break
    if chosen is None:
        raise DecodeError(f"response has no output named '{output_name}'")
    return predictions_of(doc, chosen, column)


def outputs_of(doc: dict[str, Any]) -> list[Any]:
    """The response's 'outputs' list (non-empty)."""
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise DecodeError("response has no 'outputs'")
    return outputs


def predictions_of(doc: dict[str, Any], chosen: Tensor, column: int | None) -> Predictions:
    """The monitored output's values (one column of a 2-D output) and the model version."""
    values = chosen.column(column_index(chosen.per_row, column))
    version = doc.get("model_version")
    return Predictions(
        values=values,
        output_name=chosen.name,
        model_version=str(version) if version is not None else None,
    )


def column_index(width: int, column: int | None) -> int:
    """Which column of a 2-D output holds the prediction (default: the last)."""
    if width == 1:
        return 0
    idx = column if column is not None else width - 1
    if not -width <= idx < width:
        raise DecodeError(f"output column {idx} is outside its {width} columns")
    return idx % width
