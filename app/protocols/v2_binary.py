"""The V2 binary tensor data extension over HTTP (Triton, KServe, tritonclient's default).

A body starts with a JSON header of `Inference-Header-Content-Length` bytes; after it come the
raw bytes of every tensor whose `parameters.binary_data_size` is set, one after the other in
tensor order. Fixed-size datatypes are little-endian, BOOL is one byte per element, and each
BYTES element is a 4-byte little-endian length followed by that many bytes. Responses use the
same framing for the outputs sent as binary.

Tensors decode to the values the JSON codec yields for the same data (Python ints, floats,
bools and str), so validation, windows and statistics see identical Batches. BYTES elements
that are not UTF-8 are shown with backslash escapes (`\\xff`): JSON cannot carry them, and the
forwarded body keeps the original bytes anyway.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from app.errors import DecodeError
from app.monitoring.batch import Batch, Predictions
from app.protocols import v2
from app.protocols.json_body import check_unique_keys, loads, require_object

HEADER = "inference-header-content-length"
"""The header giving the JSON header's length in bytes (names lower-cased, as ASGI has them)."""

FIXED_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("u1"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_LENGTH = struct.Struct("<I")


def split(body: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """The JSON header and the binary data after it.

    Raises:
        DecodeError: the header length is not a number, or not within the body.
    """
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise DecodeError(
            f"the Inference-Header-Content-Length header must be a byte count, not {text[:40]!r}"
        )
    if len(text) > 20 or int(text) > len(body):
        raise DecodeError(f"the header length {text[:40]} exceeds the body ({len(body)} bytes)")
    size = int(text)
    if size == 0:
        raise DecodeError("the header length is 0: the body must start with its JSON header")
    return body[:size], memoryview(body)[size:]


def _json(head: bytes) -> Any:
    try:
        return loads(head)
    except DecodeError as exc:
        raise DecodeError(
            f"the JSON header (the first {len(head)} bytes, per Inference-Header-Content-Length)"
            f": {exc.message}"
        ) from None


class _Data:
    """The binary data after the JSON header, consumed tensor by tensor in order."""

    __slots__ = ("data", "kind", "offset")

    def __init__(self, data: memoryview, kind: str) -> None:
        self.data = data
        self.kind = kind
        """'input' or 'output', for messages."""
        self.offset = 0

    def take(self, name: str, size: int) -> memoryview:
        """The next `size` bytes, those of tensor `name`."""
        start, end = self.offset, self.offset + size
        if end > len(self.data):
            raise DecodeError(
                f"{self.kind} '{name}': the binary data ends {end - len(self.data)} bytes early "
                f"(binary_data_size {size} from byte {start} of {len(self.data)})"
            )
        self.offset = end
        return self.data[start:end]

    def reader(self, size: int) -> v2.BinaryReader:
        """Reads one tensor of `size` bytes into flat values."""

        def read(name: str, shape: list[int], datatype: str) -> list[Any]:
            where = f"{self.kind} '{name}'"
            dtype = FIXED_DTYPES.get(datatype)
            if dtype is not None and math.prod(shape) * dtype.itemsize != size:
                raise DecodeError(
                    f"{where}: binary_data_size {size} does not match shape {shape} "
                    f"× {datatype} ({math.prod(shape) * dtype.itemsize} bytes)"  # noqa: RUF001
                )
            return tensor_values(self.take(name, size), datatype, shape, where)

        return read

    def finish(self) -> None:
        """Refuse bytes left after the last tensor."""
        left = len(self.data) - self.offset
        if left:
            raise DecodeError(f"{left} bytes follow the last tensor")


def tensor_values(
    data: bytes | memoryview, datatype: str, shape: list[int], where: str
) -> list[Any]:
    """The flat values of one tensor in its raw wire form, shared by the binary extension and
    gRPC's raw contents: little-endian elements, BYTES as a 4-byte little-endian length and
    the bytes (UTF-8 text, or escaped when not). `where` names the tensor in errors.

    Raises:
        DecodeError: the data does not hold exactly the shape's elements.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _strings(data, count, where, shape)
    dtype = FIXED_DTYPES[datatype]
    if count * dtype.itemsize != len(data):
        raise DecodeError(
            f"{where}: shape {shape} × {datatype} needs {count * dtype.itemsize} bytes "  # noqa: RUF001
            f"but its data holds {len(data)}"
        )
    values = np.frombuffer(data, dtype)
    if datatype == "BOOL":
        values = values != 0
    flat: list[Any] = values.tolist()
    return flat


def _strings(chunk: bytes | memoryview, count: int, where: str, shape: list[int]) -> list[Any]:
    out: list[Any] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if len(out) == count:
            raise DecodeError(
                f"{where}: shape {shape} needs {count} BYTES elements but its data holds more "
                f"({end - pos} bytes after element {count - 1})"
            )
        if end - pos < 4:
            raise DecodeError(
                f"{where}: BYTES element {len(out)} has {end - pos} of the 4 bytes of its "
                "length prefix"
            )
        (length,) = _LENGTH.unpack_from(chunk, pos)
        pos += 4
        if length > end - pos:
            raise DecodeError(
                f"{where}: a BYTES element length runs past its tensor (element {len(out)} "
                f"claims {length} bytes; {end - pos} remain)"
            )
        raw = bytes(chunk[pos : pos + length])
        pos += length
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(raw.decode("utf-8", "backslashreplace"))
    if len(out) != count:
        raise DecodeError(
            f"{where}: shape {shape} needs {count} BYTES elements but its data holds {len(out)}"
        )
    return out


def _binary_size(raw: Any, kind: str) -> int | None:
    """The tensor's `parameters.binary_data_size`; None when it carries JSON 'data'."""
    if type(raw) is not dict:
        return None  # parse_tensor says what is wrong
    params = raw.get("parameters")
    if type(params) is not dict or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    name = raw.get("name")
    if type(size) is not int or size < 0:
        raise DecodeError(
            f"{kind} '{name}': parameters.binary_data_size must be a non-negative integer, "
            f"not {size!r}"
        )
    if "data" in raw:
        raise DecodeError(
            f"{kind} '{name}' has both 'data' and parameters.binary_data_size; send one of them"
        )
    return size


def decode_request(body: bytes, feature_order: list[str], header_length: str) -> Batch:
    """Decode a request in the binary tensor extension into the JSON codec's columns.

    Raises:
        DecodeError: the framing, a tensor's size or its data is inconsistent; the message
            names the input and the problem.
    """
    head, tail = split(body, header_length)
    doc = require_object(_json(head), "the JSON header")
    inputs = v2.inputs_of(doc)
    data = _Data(tail, "input")
    tensors = []
    for i, raw in enumerate(inputs):
        size = _binary_size(raw, "input")
        reader = data.reader(size) if size is not None else None
        tensors.append(v2.parse_tensor(raw, i, reader))
    data.finish()
    batch = v2.assemble(tensors, feature_order)
    check_unique_keys(head, v2.request_keys(doc, inputs))
    return batch


def decode_response(
    body: bytes, output_name: str | None, column: int | None, header_length: str
) -> Predictions:
    """Decode a response in the binary tensor extension and pick the monitored output.

    Raises:
        DecodeError: the framing or the chosen output is inconsistent, or the output is absent.
    """
    head, tail = split(body, header_length)
    doc = require_object(_json(head), "response")
    outputs = v2.outputs_of(doc)
    data = _Data(tail, "output")
    chosen = None
    for i, raw in enumerate(outputs):
        if not isinstance(raw, dict):
            raise DecodeError(f"outputs[{i}] must be an object")
        size = _binary_size(raw, "output")
        if chosen is None and (output_name is None or raw.get("name") == output_name):
            reader = data.reader(size) if size is not None else None
            chosen = v2.parse_tensor(raw, f"outputs[{i}]", reader)
        elif size is not None:
            data.take(str(raw.get("name")), size)
    data.finish()
    if chosen is None:
        raise DecodeError(f"response has no output named '{output_name}'")
    return v2.predictions_of(doc, chosen, column)
