"""`ModelInferRequest`/`ModelInferResponse` bytes → the `Batch` and `Predictions` that the JSON
V2 codec produces for the same values.

Tensor values come from the typed `contents` field of their datatype, or from
`raw_input_contents`/`raw_output_contents`: flattened, row-major, little-endian, and for
BYTES a 4-byte little-endian length before each element. BYTES elements become `str` (as
JSON strings do; bytes that are not UTF-8 are shown with backslash escapes, as in the HTTP
binary extension, for monitoring only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from app.errors import DecodeError
from app.grpc.proto.open_inference_grpc_pb2 import (
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
)
from app.monitoring.batch import Batch, Predictions
from app.protocols.v2 import DATATYPES, Tensor, assemble, column_index
from app.protocols.v2_binary import tensor_values

CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed `InferTensorContents` field of each datatype (FP16 has none: raw only)."""
_ALL_FIELDS = tuple(sorted(set(CONTENT_FIELDS.values())))


def parse_request(data: bytes) -> ModelInferRequest:
    """The message, or DecodeError when the bytes are not a `ModelInferRequest`."""
    try:
        msg: ModelInferRequest = ModelInferRequest.FromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"the message is not a ModelInferRequest: {exc}") from None
    return msg


def decode_request(msg: ModelInferRequest, feature_order: list[str]) -> Batch:
    """Decode an inference request into columns (same rules as the JSON V2 codec).

    Raises:
        DecodeError: a tensor's datatype, shape or contents disagree.
    """
    inputs = msg.inputs
    if not inputs:
        raise DecodeError("the request needs at least one input tensor")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise DecodeError(
            f"raw_input_contents holds {len(raw)} entries for {len(inputs)} inputs; "
            "send one per input, in the same order"
        )
    tensors: list[Tensor] = []
    for i, t in enumerate(inputs):
        where = f"inputs[{i}] '{t.name}'"
        if not t.name:
            raise DecodeError(f"inputs[{i}] needs a non-empty name")
        shape, datatype = _header(t.shape, t.datatype, where)
        count = math.prod(shape)
        if raw:
            if t.HasField("contents"):
                raise DecodeError(f"{where} has contents although raw_input_contents is used")
            flat = tensor_values(raw[i], datatype, shape, where)
        else:
            flat = typed_values(t.contents, datatype, count, where)
        tensors.append(Tensor(t.name, shape, datatype, flat))
    return assemble(tensors, feature_order)


def decode_response(data: bytes, output_name: str | None, column: int | None) -> Predictions:
    """The monitored output of a `ModelInferResponse` (the first one when unnamed).

    Raises:
        DecodeError: the bytes are not a response, or it lacks the output.
    """
    try:
        msg = ModelInferResponse.FromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"the response is not a ModelInferResponse: {exc}") from None
    chosen = next(
        (i for i, o in enumerate(msg.outputs) if output_name is None or o.name == output_name),
        None,
    )
    if chosen is None:
        raise DecodeError(
            f"response has no output named '{output_name}'" if output_name else "no outputs"
        )
    out = msg.outputs[chosen]
    where = f"outputs[{chosen}] '{out.name}'"
    shape, datatype = _header(out.shape, out.datatype, where)
    count = math.prod(shape)
    raw = msg.raw_output_contents
    if raw:
        if chosen >= len(raw):
            raise DecodeError(f"{where} has no raw_output_contents entry")
        flat = tensor_values(raw[chosen], datatype, shape, where)
    else:
        flat = typed_values(out.contents, datatype, count, where)
    tensor = Tensor(out.name, shape, datatype, flat)
    values = tensor.column(column_index(tensor.per_row, column))
    return Predictions(values, out.name, msg.model_version or None)


def _header(shape: Sequence[int], datatype: str, where: str) -> tuple[list[int], str]:
    if datatype not in DATATYPES:
        raise DecodeError(f"{where}: unknown datatype {datatype!r}")
    dims = list(shape)
    if any(d < 0 for d in dims):
        raise DecodeError(f"{where}: shape {dims} has a negative dimension")
    return dims, datatype


def typed_values(contents: InferTensorContents, datatype: str, count: int, where: str) -> list[Any]:
    """A tensor's values from the typed contents field of its datatype."""
    field = CONTENT_FIELDS.get(datatype)
    if field is None:
        raise DecodeError(f"{where}: {datatype} values must be sent in raw_input_contents")
    for other in _ALL_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise DecodeError(f"{where}: a {datatype} tensor cannot hold {other}")
    values = getattr(contents, field)
    if len(values) != count:
        raise DecodeError(
            f"{where}: its shape needs {count} values but {field} holds {len(values)}"
        )
    if datatype == "BYTES":
        return [_text(v) for v in values]
    return list(values)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")  # as the HTTP binary extension does
