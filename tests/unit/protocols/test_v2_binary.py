"""V2 binary tensor extension: bodies framed by Inference-Header-Content-Length decode to the
same Batches and Predictions as JSON tensors, and every inconsistency is a precise 400."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import serialize_byte_tensor

from app.errors import DecodeError
from app.protocols import v2, v2_binary
from app.protocols.codecs import CODECS

FEATURES = ["age", "income", "city"]
NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def raw_of(values: list[Any], datatype: str) -> bytes:
    """The tensor's binary data as tritonclient writes it."""
    if datatype == "BYTES":
        array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
        data: bytes = serialize_byte_tensor(array).item() if values else b""
        return data
    return np.array(values, dtype=np.dtype(NUMPY[datatype]).newbyteorder("<")).tobytes()


def spec(name: str, shape: list[int], datatype: str, values: list[Any], binary: bool = True) -> Any:
    return (name, shape, datatype, values, binary)


def frame(
    specs: list[Any], key: str = "inputs", extra: dict[str, Any] | None = None
) -> tuple[bytes, str]:
    """A binary-extension body and its Inference-Header-Content-Length value."""
    tensors, tail = [], b""
    for name, shape, datatype, values, binary in specs:
        t: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
        if binary:
            raw = raw_of(values, datatype)
            t["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            t["data"] = values
        tensors.append(t)
    head = json.dumps({**(extra or {}), key: tensors}).encode()
    return head + tail, str(len(head))


def as_json(specs: list[Any], key: str = "inputs") -> bytes:
    doc = {key: [{"name": n, "shape": s, "datatype": d, "data": v} for n, s, d, v, _ in specs]}
    return json.dumps(doc).encode()


def decode(specs: list[Any], features: list[str] = FEATURES) -> Any:
    body, length = frame(specs)
    return v2_binary.decode_request(body, features, length)


# --- requests ------------------------------------------------------------------------------


class TestRequests:
    @pytest.mark.parametrize(
        ("datatype", "values"),
        [
            ("BOOL", [True, False, True]),
            ("UINT8", [0, 7, 255]),
            ("UINT16", [0, 513, 65535]),
            ("UINT32", [0, 70000, 2**32 - 1]),
            ("UINT64", [0, 2**40, 2**64 - 1]),
            ("INT8", [-128, 0, 127]),
            ("INT16", [-32768, 1, 32767]),
            ("INT32", [-(2**31), 5, 2**31 - 1]),
            ("INT64", [-(2**63), 0, 2**63 - 1]),
            ("FP16", [0.5, -2.25, 1024.0]),
            ("FP32", [0.1015625, -3.5, 1e-3]),
            ("FP64", [0.1, -1e300, 3.25]),
            ("BYTES", ["é€😀", "", "paris"]),
        ],
    )
    def test_every_datatype_decodes_like_json(self, datatype: str, values: list[Any]) -> None:
        if datatype == "FP32":  # JSON carries what float32 holds
            values = np.array(values, dtype=np.float32).tolist()
        specs = [spec("age", [3], datatype, values)]
        batch = decode(specs)
        assert batch == v2.decode_request(as_json(specs), FEATURES)
        assert batch.columns["age"] == values
        assert [type(v) for v in batch.columns["age"]] == [type(v) for v in values]

    def test_non_finite_floats_reach_the_validator_as_floats(self) -> None:
        batch = decode([spec("income", [3], "FP32", [math.nan, math.inf, -math.inf])])
        got = batch.columns["income"]
        assert math.isnan(got[0])
        assert got[1:] == [math.inf, -math.inf]

    def test_bytes_multibyte_empty_and_not_utf8(self) -> None:
        values: list[Any] = ["", "Zürich", "東京", b"\xff\xfeok", ""]
        batch = decode([spec("city", [5], "BYTES", values)])
        assert batch.columns["city"] == ["", "Zürich", "東京", "\\xff\\xfeok", ""]

    def test_shapes_n_and_n_by_1(self) -> None:
        specs = [
            spec("age", [2, 1], "INT64", [30, 41]),
            spec("income", [2], "FP64", [1.5, 2.5]),
            spec("city", [2, 1], "BYTES", ["a", "b"]),
        ]
        batch = decode(specs)
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": ["a", "b"]}
        assert batch.source == "v2:tensor-per-feature"

    def test_matrix_in_profile_order(self) -> None:
        specs = [spec("input-0", [2, 3], "FP64", [30.0, 1.5, 7.0, 41.0, 2.5, 8.0])]
        batch = decode(specs)
        assert batch == v2.decode_request(as_json(specs), FEATURES)
        assert batch.columns == {"age": [30.0, 41.0], "income": [1.5, 2.5], "city": [7.0, 8.0]}
        assert batch.source == "v2:matrix"

    def test_unknown_wide_tensor_kept_per_row(self) -> None:
        specs = [spec("age", [2], "INT64", [1, 2]), spec("emb", [2, 2], "FP32", [1, 2, 3, 4])]
        assert decode(specs).columns["emb"] == [[1.0, 2.0], [3.0, 4.0]]

    def test_mixed_json_and_binary_inputs(self) -> None:
        specs = [
            spec("age", [3], "INT32", [30, 41, 52]),
            spec("income", [3], "FP64", [1.0, 2.0, 3.5], binary=False),
            spec("city", [3], "BYTES", ["x", "", "zz"]),
        ]
        batch = decode(specs)
        assert batch == v2.decode_request(as_json(specs), FEATURES)
        assert batch.columns["city"] == ["x", "", "zz"]

    def test_zero_size_tensor_and_header_only_body(self) -> None:
        body, length = frame([spec("age", [0], "INT64", [])])
        assert v2_binary.decode_request(body, FEATURES, length).n_rows == 0
        json_only, length = frame([spec("age", [1], "INT64", [5], binary=False)])
        assert v2_binary.decode_request(json_only, FEATURES, length).columns == {"age": [5]}

    def test_tritonclients_own_request_body(self) -> None:
        inputs = []
        for name, array in (
            ("age", np.array([[30], [41]], dtype=np.int64)),
            ("income", np.array([1.5, 2.5], dtype=np.float16)),
            ("city", np.array(["Genève", ""], dtype=object)),
        ):
            datatype = "BYTES" if array.dtype == object else triton_dtype(array.dtype)
            t = triton_http.InferInput(name, list(array.shape), datatype)
            t.set_data_from_numpy(array, binary_data=True)
            inputs.append(t)
        outputs = [triton_http.InferRequestedOutput("predict", binary_data=True)]
        body, length = triton_http.InferenceServerClient.generate_request_body(
            inputs, outputs, request_id="r1"
        )
        batch = v2_binary.decode_request(body, FEATURES, str(length))
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": ["Genève", ""]}

    def test_header_value_with_spaces(self) -> None:
        body, length = frame([spec("age", [1], "INT64", [5])])
        assert v2_binary.decode_request(body, FEATURES, f" {length} ").columns == {"age": [5]}

    def test_codec_registry(self) -> None:
        binary = CODECS["v2"].binary
        assert binary is not None
        assert binary.header == "inference-header-content-length"
        assert binary.decode_request is v2_binary.decode_request
        assert CODECS["v1"].binary is None
        assert CODECS["mlflow"].binary is None


def triton_dtype(dtype: np.dtype[Any]) -> str:
    return {np.dtype(t): name for name, t in NUMPY.items()}[dtype]


def _age(size: int, tail: bytes, shape: list[int] | None = None, datatype: str = "INT64") -> Any:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "age",
                    "shape": shape or [4],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return head + tail, str(len(head))


def _bytes_tensor(tail: bytes, count: int) -> Any:
    return _age(len(tail), tail, [count], "BYTES")


def _refused(body: bytes, length: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        v2_binary.decode_request(body, FEATURES, length)
    assert message in info.value.message, info.value.message


class TestRequestErrors:
    def test_size_does_not_match_shape(self) -> None:
        _refused(
            *_age(12, b"\0" * 12),
            "input 'age': binary_data_size 12 does not match shape [4] × INT64 (32 bytes)",  # noqa: RUF001
        )

    def test_data_ends_early(self) -> None:
        _refused(*_age(32, b"\0" * 25), "input 'age': the binary data ends 7 bytes early")

    def test_bytes_follow_the_last_tensor(self) -> None:
        _refused(*_age(32, b"\0" * 40), "8 bytes follow the last tensor")

    def test_header_length_exceeds_body(self) -> None:
        body, _ = _age(32, b"\0" * 32)
        _refused(body, "900", f"the header length 900 exceeds the body ({len(body)} bytes)")

    @pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "0x10", "²", "12 34"])
    def test_header_length_not_a_byte_count(self, value: str) -> None:
        body, _ = _age(32, b"\0" * 32)
        _refused(body, value, "the Inference-Header-Content-Length header must be a byte count")

    def test_header_length_zero(self) -> None:
        _refused(*_age(32, b"\0" * 32)[:1], "0", "the header length is 0")

    def test_huge_header_length(self) -> None:
        body, _ = _age(32, b"\0" * 32)
        _refused(body, "9" * 5000, "exceeds the body")

    def test_header_length_cuts_the_json(self) -> None:
        body, length = _age(32, b"\0" * 32)
        short = str(int(length) - 3)
        _refused(body, short, f"the JSON header (the first {short} bytes")

    def test_header_length_past_the_json(self) -> None:
        body, length = _age(32, b"\0" * 32)
        # The header then holds JSON followed by binary: invalid JSON, said so.
        _refused(body, str(int(length) + 4), "the JSON header (the first")

    def test_header_not_an_object(self) -> None:
        _refused(b"[1, 2]", "6", "the JSON header must be a JSON object, not an array")

    def test_bytes_element_runs_past_its_tensor(self) -> None:
        tail = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 100) + b"xyz"
        _refused(
            *_bytes_tensor(tail, 2),
            "input 'age': a BYTES element length runs past its tensor (element 1 claims 100 "
            "bytes; 3 remain)",
        )

    def test_bytes_length_prefix_cut(self) -> None:
        tail = struct.pack("<I", 2) + b"ab" + b"\x01\x00"
        _refused(*_bytes_tensor(tail, 2), "BYTES element 1 has 2 of the 4 bytes of its length")

    def test_bytes_fewer_elements_than_shape(self) -> None:
        tail = struct.pack("<I", 2) + b"ab"
        _refused(*_bytes_tensor(tail, 3), "shape [3] needs 3 BYTES elements but its data holds 1")

    def test_bytes_more_elements_than_shape(self) -> None:
        tail = (struct.pack("<I", 1) + b"a") * 3
        _refused(
            *_bytes_tensor(tail, 2),
            "shape [2] needs 2 BYTES elements but its data holds more (5 bytes after element 1)",
        )

    @pytest.mark.parametrize("size", [-1, "32", 1.5, True, None])
    def test_binary_data_size_not_a_count(self, size: Any) -> None:
        _refused(
            *_age(size, b"\0" * 32),
            "input 'age': parameters.binary_data_size must be a non-negative integer",
        )

    def test_both_data_and_binary_size(self) -> None:
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "age",
                        "shape": [1],
                        "datatype": "INT64",
                        "data": [1],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            }
        ).encode()
        _refused(
            head + b"\0" * 8,
            str(len(head)),
            "input 'age' has both 'data' and parameters.binary_data_size",
        )

    def test_unknown_datatype(self) -> None:
        _refused(*_age(32, b"\0" * 32, datatype="INT128"), "unknown datatype 'INT128'")

    def test_bad_shape(self) -> None:
        _refused(
            *_age(32, b"\0" * 32, shape=[-4]), "'shape' must be a list of non-negative integers"
        )

    def test_rows_disagree(self) -> None:
        body, length = frame(
            [spec("age", [2], "INT64", [1, 2]), spec("income", [3], "FP64", [1.0, 2.0, 3.0])]
        )
        _refused(body, length, "input 'income' has 3 rows but input 'age' has 2")

    def test_duplicate_key_in_header(self) -> None:
        head = b'{"inputs": [{"name": "age", "name": "city", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}]}'
        _refused(head + b"\0" * 8, str(len(head)), "key 'name' appears more than once")

    def test_binary_tensor_without_the_header(self) -> None:
        body, length = _age(32, b"\0" * 32)
        with pytest.raises(DecodeError) as info:
            v2.decode_request(body[: int(length)], FEATURES)
        assert (
            "holds binary data (parameters.binary_data_size) but the request has no Inference-Header-Content-Length"
            in info.value.message
        )

    def test_second_tensor_ends_early_names_it(self) -> None:
        body, length = frame(
            [spec("age", [2], "INT64", [1, 2]), spec("city", [2], "BYTES", ["a", "b"])]
        )
        _refused(body[:-1], length, "input 'city': ")


# --- responses -----------------------------------------------------------------------------


def response(specs: list[Any], version: str | None = "7") -> tuple[bytes, str]:
    extra = {"model_name": "m", "model_version": version} if version else {"model_name": "m"}
    return frame(specs, "outputs", extra)


class TestResponses:
    def test_binary_output(self) -> None:
        body, length = response([spec("predict", [3], "INT64", [0, 1, 1])])
        got = v2_binary.decode_response(body, "predict", None, length)
        assert (got.values, got.output_name, got.model_version) == ([0, 1, 1], "predict", "7")

    def test_chosen_output_after_a_binary_one(self) -> None:
        body, length = response(
            [
                spec("proba", [2, 2], "FP32", [0.25, 0.75, 0.5, 0.5]),
                spec("predict", [2], "BYTES", ["yes", "no"]),
            ]
        )
        assert v2_binary.decode_response(body, "predict", None, length).values == ["yes", "no"]
        assert v2_binary.decode_response(body, "proba", 1, length).values == [0.75, 0.5]
        assert v2_binary.decode_response(body, None, 0, length).values == [0.25, 0.5]

    def test_json_output_beside_binary_ones(self) -> None:
        specs = [
            spec("a", [1], "FP64", [1.0]),
            spec("predict", [2], "FP64", [0.5, 0.25], binary=False),
            spec("b", [2], "BOOL", [True, False]),
        ]
        body, length = response(specs)
        assert v2_binary.decode_response(body, "predict", None, length).values == [0.5, 0.25]
        json_body = as_json(specs, "outputs")
        assert (
            v2.decode_response(json_body, "b", None).values
            == v2_binary.decode_response(body, "b", None, length).values
        )

    @pytest.mark.parametrize(
        ("cut", "message"),
        [
            (-1, "output 'b': the binary data ends 1 bytes early"),
            (3, "3 bytes follow the last tensor"),
        ],
    )
    def test_framing_errors(self, cut: int, message: str) -> None:
        body, length = response(
            [spec("predict", [1], "INT64", [1]), spec("b", [2], "BOOL", [1, 0])]
        )
        body = body[:cut] if cut < 0 else body + b"\0" * cut
        with pytest.raises(DecodeError, match=message):
            v2_binary.decode_response(body, "predict", None, length)

    def test_output_size_mismatch(self) -> None:
        head = b'{"outputs": [{"name": "predict", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 8}}]}'
        with pytest.raises(
            DecodeError, match=r"output 'predict': binary_data_size 8 does not match shape \[2\]"
        ):
            v2_binary.decode_response(head + b"\0" * 8, "predict", None, str(len(head)))

    def test_missing_output(self) -> None:
        body, length = response([spec("predict", [1], "INT64", [1])])
        with pytest.raises(DecodeError, match="response has no output named 'other'"):
            v2_binary.decode_response(body, "other", None, length)

    def test_binary_output_without_the_header(self) -> None:
        body, length = response([spec("predict", [1], "INT64", [1])])
        with pytest.raises(
            DecodeError, match="but the response has no Inference-Header-Content-Length"
        ):
            v2.decode_response(body[: int(length)], "predict", None)


# --- properties ----------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
COLUMN_KINDS: dict[str, Any] = {
    "INT64": st.integers(-(2**63), 2**63 - 1),
    "UINT8": st.integers(0, 255),
    "INT32": st.integers(-(2**31), 2**31 - 1),
    "FP64": st.floats(allow_nan=False),
    "FP32": st.floats(width=32, allow_nan=False),
    "FP16": st.floats(width=16, allow_nan=False),
    "BOOL": st.booleans(),
    "BYTES": text,
}


@st.composite
def requests(draw: st.DrawFn) -> list[Any]:
    """1-6 tensors of one row count, each binary or JSON, [n] or [n, 1]."""
    n = draw(st.integers(0, 20))
    names = draw(
        st.lists(
            st.sampled_from([*FEATURES, "extra", "other"]), min_size=1, max_size=5, unique=True
        )
    )
    if len(names) == 1 and names[0] not in FEATURES:
        names.append("age")
    out = []
    for name in names:
        datatype = draw(st.sampled_from(sorted(COLUMN_KINDS)))
        values = draw(st.lists(COLUMN_KINDS[datatype], min_size=n, max_size=n))
        shape = draw(st.sampled_from([[n], [n, 1]]))
        out.append(
            spec(name, shape, datatype, values, binary=draw(st.booleans()) or datatype == "FP16")
        )
    return out


@PROPERTY
@given(specs=requests())
def test_round_trip_matches_the_json_path(specs: list[Any]) -> None:
    body, length = frame(specs)
    batch = v2_binary.decode_request(body, FEATURES, length)
    assert batch == v2.decode_request(as_json(specs), FEATURES)
    assert CODECS["v2"].binary is not None
    assert CODECS["v2"].binary.decode_request(body, FEATURES, length) == batch


@PROPERTY
@given(specs=requests(), which=st.integers(0, 5), column=st.none() | st.integers(-1, 0))
def test_response_round_trip_matches_the_json_path(
    specs: list[Any], which: int, column: int | None
) -> None:
    body, length = frame(specs, "outputs")
    name = specs[which % len(specs)][0]
    got = v2_binary.decode_response(body, name, column, length)
    want = v2.decode_response(as_json(specs, "outputs"), name, column)
    assert (got.values, got.output_name) == (want.values, want.output_name)


header_lengths = st.integers(-5, 400).map(str) | st.text(max_size=6)


@PROPERTY
@given(
    specs=requests(),
    tail=st.binary(max_size=40),
    cut=st.integers(0, 60),
    shift=st.integers(-8, 8),
    length=header_lengths | st.none(),
)
def test_damaged_bodies_raise_only_request_errors(
    specs: list[Any], tail: bytes, cut: int, shift: int, length: str | None
) -> None:
    """Truncated, extended or mis-framed bodies: a DecodeError or a consistent Batch."""
    body, true_length = frame(specs)
    damaged = body[: max(0, len(body) - cut)] + tail
    header = length if length is not None else str(int(true_length) + shift)
    for call in (v2_binary.decode_request, _response_of):
        try:
            batch = call(damaged, FEATURES, header)
        except DecodeError:
            continue
        if batch is not None:
            assert all(len(col) == batch.n_rows for col in batch.columns.values())


def _response_of(body: bytes, _features: list[str], length: str) -> None:
    v2_binary.decode_response(body, None, None, length)


@PROPERTY
@given(body=st.binary(max_size=200), length=header_lengths)
def test_arbitrary_bytes_raise_only_decode_errors(body: bytes, length: str) -> None:
    for call in (
        lambda: v2_binary.decode_request(body, FEATURES, length),
        lambda: v2_binary.decode_response(body, None, None, length),
    ):
        with contextlib.suppress(DecodeError):
            call()
