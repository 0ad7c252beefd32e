"""ModelInferRequest/Response decoding: every datatype, typed and raw contents, malformed
messages, and agreement with the JSON V2 codec on the same values."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import DecodeError
from app.grpc.decode import CONTENT_FIELDS, decode_request, decode_response, parse_request
from app.grpc.handler import forwardable
from app.grpc.proto import open_inference_grpc_pb2 as pb
from app.grpc.status import HTTP_STATUS, http_status
from app.protocols import v2
from app.telemetry.metrics import status_class

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "UINT8": [0, 7, 255],
    "UINT16": [0, 7, 65535],
    "UINT32": [0, 7, 2**32 - 1],
    "UINT64": [0, 7, 2**64 - 1],
    "INT8": [-128, 0, 127],
    "INT16": [-(2**15), 0, 2**15 - 1],
    "INT32": [-(2**31), 0, 2**31 - 1],
    "INT64": [-(2**63), 0, 2**63 - 1],
    "FP16": [0.5, -2.0, 65504.0],
    "FP32": [0.5, -2.25, 2.0**100],
    "FP64": [0.1, -2.5, 1e300],
    "BYTES": ["a", "", "héllo"],
}


def raw_of(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in values))
    return (
        np.array(values, dtype=NUMPY[datatype])
        .astype(np.dtype(NUMPY[datatype]).newbyteorder("<"))
        .tobytes()
    )


def request(
    tensors: list[tuple[str, str, list[int], list[Any]]], raw: bool
) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, values in tensors:
        t = msg.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            msg.raw_input_contents.append(raw_of(datatype, values))
        else:
            field = getattr(t.contents, CONTENT_FIELDS[datatype])
            field.extend(v.encode() for v in values) if datatype == "BYTES" else field.extend(
                values
            )
    return msg


@pytest.mark.parametrize(
    ("datatype", "raw"),
    [(d, raw) for d in sorted(SAMPLES) for raw in (False, True) if raw or d != "FP16"],
)
def test_each_datatype_decodes_to_its_values(datatype: str, raw: bool) -> None:
    values = SAMPLES[datatype]
    batch = decode_request(request([("x", datatype, [3], values)], raw), ["x"])
    assert batch.n_rows == 3
    assert batch.columns == {"x": values}
    assert [type(v) for v in batch.columns["x"]] == [type(v) for v in values]


def test_fp16_needs_raw_contents() -> None:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(DecodeError, match="raw_input_contents"):
        decode_request(msg, ["x"])


def test_matrix_and_unknown_tensors_match_the_json_shapes() -> None:
    msg = request([("m", "FP64", [2, 2], [1.0, 2.0, 3.0, 4.0])], raw=True)
    batch = decode_request(msg, ["a", "b"])
    assert (batch.source, batch.columns) == ("v2:matrix", {"a": [1.0, 3.0], "b": [2.0, 4.0]})
    msg = request([("a", "INT64", [2], [1, 2]), ("emb", "FP32", [2, 2], [1, 2, 3, 4])], False)
    batch = decode_request(msg, ["a"])
    assert batch.columns == {"a": [1, 2], "emb": [[1.0, 2.0], [3.0, 4.0]]}


def bad_raw_size() -> pb.ModelInferRequest:
    msg = request([("x", "INT64", [3], [1, 2, 3])], True)
    msg.raw_input_contents[0] = b"\0" * 16
    return msg


def bad_raw_count() -> pb.ModelInferRequest:
    msg = request([("x", "INT64", [1], [1]), ("y", "INT64", [1], [2])], True)
    del msg.raw_input_contents[1]
    return msg


def raw_and_typed() -> pb.ModelInferRequest:
    msg = request([("x", "INT64", [1], [1])], True)
    msg.inputs[0].contents.int64_contents.append(1)
    return msg


def typed_wrong_field() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="INT64", shape=[1]).contents.fp32_contents.append(1.0)
    return msg


def typed_short() -> pb.ModelInferRequest:
    return request([("x", "INT64", [3], [1, 2])], False)


def bytes_truncated_prefix() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="BYTES", shape=[2])
    msg.raw_input_contents.append(struct.pack("<I", 1) + b"a" + b"\x01\x00")
    return msg


def bytes_overlong() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(struct.pack("<I", 9) + b"abc")
    return msg


def bytes_too_many() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(raw_of("BYTES", ["a", "b"]))
    return msg


def unknown_datatype() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="FP8", shape=[1])
    return msg


def negative_shape() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest()
    msg.inputs.add(name="x", datatype="INT64", shape=[-1])
    return msg


def duplicate() -> pb.ModelInferRequest:
    return request([("x", "INT64", [1], [1]), ("x", "INT64", [1], [2])], False)


def rows_disagree() -> pb.ModelInferRequest:
    return request([("x", "INT64", [1], [1]), ("y", "INT64", [2], [2, 3])], False)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (bad_raw_size, "24 bytes"),
        (bad_raw_count, "1 entries for 2 inputs"),
        (raw_and_typed, "has contents although raw_input_contents"),
        (typed_wrong_field, "cannot hold fp32_contents"),
        (typed_short, "needs 3 values but int64_contents holds 2"),
        (bytes_truncated_prefix, "BYTES element 1 has 2 of the 4 bytes of its length prefix"),
        (bytes_overlong, "claims 9 bytes; 3 remain"),
        (bytes_too_many, r"shape \[1\] needs 1 BYTES elements but its data holds more"),
        (unknown_datatype, "unknown datatype 'FP8'"),
        (negative_shape, "negative dimension"),
        (duplicate, "appears more than once"),
        (rows_disagree, "has 2 rows"),
        (pb.ModelInferRequest, "at least one input"),
    ],
)
def test_malformed_tensors_are_decode_errors(build: Any, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_request(build(), ["x", "y"])


def test_bytes_that_are_not_a_message_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a ModelInferRequest"):
        parse_request(b"\x0a\xff\x01garbage")
    assert parse_request(pb.ModelInferRequest(model_name="m").SerializeToString()).model_name == "m"


def test_response_output_column_and_version() -> None:
    out = pb.ModelInferResponse(model_name="m", model_version="v3")
    out.outputs.add(name="label", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"a", b"b"]
    )
    out.outputs.add(name="proba", datatype="FP32", shape=[2, 2])
    out.raw_output_contents.extend(
        [raw_of("BYTES", ["a", "b"]), raw_of("FP32", [0.25, 0.75, 0.5, 0.5])]
    )
    p = decode_response(out.SerializeToString(), "proba", None)
    assert (p.values, p.output_name, p.model_version) == ([0.75, 0.5], "proba", "v3")
    assert decode_response(out.SerializeToString(), "proba", 0).values == [0.25, 0.5]
    assert decode_response(out.SerializeToString(), None, None).values == ["a", "b"]
    with pytest.raises(DecodeError, match="no output named 'nope'"):
        decode_response(out.SerializeToString(), "nope", None)
    with pytest.raises(DecodeError, match="not a ModelInferResponse"):
        decode_response(b"\x0a\xff", None, None)
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="y", datatype="INT64", shape=[2, 1]).contents.int64_contents.extend(
        [1, 0]
    )
    assert decode_response(typed.SerializeToString(), "y", None).values == [1, 0]
    assert decode_response(typed.SerializeToString(), "y", None).model_version is None


# --- agreement with the JSON V2 codec ------------------------------------------------------

_INT_RANGES = {"INT8": 7, "INT16": 15, "INT32": 31, "INT64": 63}
_UINT_RANGES = {"UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64}


def values_of(datatype: str, n: int) -> st.SearchStrategy[list[Any]]:
    if datatype == "BOOL":
        element: st.SearchStrategy[Any] = st.booleans()
    elif datatype in _INT_RANGES:
        bits = _INT_RANGES[datatype]
        element = st.integers(-(2**bits), 2**bits - 1)
    elif datatype in _UINT_RANGES:
        element = st.integers(0, 2 ** _UINT_RANGES[datatype] - 1)
    elif datatype == "FP32":
        element = st.floats(width=32, allow_nan=False, allow_infinity=False)
    elif datatype == "FP64":
        element = st.floats(allow_nan=False, allow_infinity=False)
    else:
        element = st.text(max_size=8)
    return st.lists(element, min_size=n, max_size=n)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[list[tuple[str, str, list[int], list[Any]]], list[str]]:
    n = draw(st.integers(1, 6))
    names = draw(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=4, unique=True))
    types = sorted(set(CONTENT_FIELDS))
    out = []
    for name in names:
        datatype = draw(st.sampled_from(types))
        shape = draw(st.sampled_from([[n], [n, 1]]))
        out.append((name, datatype, shape, draw(values_of(datatype, n))))
    features = draw(st.lists(st.sampled_from(names), unique=True))
    return out, features


def json_body(tensors_: list[tuple[str, str, list[int], list[Any]]]) -> bytes:
    return json.dumps(
        {"inputs": [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in tensors_]}
    ).encode()


@settings(max_examples=200, deadline=None)
@given(tensors(), st.booleans())
def test_same_batch_as_the_json_codec(
    drawn: tuple[list[tuple[str, str, list[int], list[Any]]], list[str]], raw: bool
) -> None:
    tensors_, features = drawn
    try:
        expected = v2.decode_request(json_body(tensors_), features)
    except DecodeError:  # a shape the JSON codec refuses is refused here too
        with pytest.raises(DecodeError):
            decode_request(request(tensors_, raw), features)
        return
    got = decode_request(request(tensors_, raw), features)
    assert (got.n_rows, got.source) == (expected.n_rows, expected.source)
    assert got.columns == expected.columns
    for name, column in got.columns.items():  # and the same Python types (1 is not 1.0)
        flat = [x for v in column for x in (v if isinstance(v, list) else [v])]
        ref = [x for v in expected.columns[name] for x in (v if isinstance(v, list) else [v])]
        assert [type(x) for x in flat] == [type(x) for x in ref]
        assert all(not isinstance(x, float) or math.isfinite(x) for x in flat)


# --- status mapping and metadata ------------------------------------------------------------


def test_every_status_code_has_an_http_class() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    classes = {code.name: status_class(http_status(code)) for code in grpc.StatusCode}
    assert classes["OK"] == "2xx"
    for name in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "CANCELLED"):
        assert classes[name] == "4xx", name
    for name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "UNIMPLEMENTED"):
        assert classes[name] == "5xx", name


def test_forwardable_metadata_drops_transport_keys_and_the_request_id() -> None:
    md = [
        ("user-agent", "grpc-python"), ("x-custom", "1"), ("grpc-accept-encoding", "gzip"),
        (":authority", "h"), ("x-request-id", "r"), ("te", "trailers"), ("k-bin", b"\x00"),
    ]  # fmt: skip
    assert forwardable(md) == [("x-custom", "1"), ("k-bin", b"\x00")]
