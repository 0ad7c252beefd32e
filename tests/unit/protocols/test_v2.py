"""Open Inference Protocol (V2) JSON requests and responses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.errors import DecodeError
from app.protocols import v2
from app.protocols.codecs import CODECS

FEATURES = ["age", "income", "city"]


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def tensor(name: str, shape: list[int], datatype: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def decode(doc: Any, features: list[str] = FEATURES) -> Any:
    return v2.decode_request(body(doc), features)


# --- requests ------------------------------------------------------------------------------


class TestRequestShapes:
    def test_one_tensor_per_feature_flat(self) -> None:
        batch = decode(
            {
                "inputs": [
                    tensor("age", [2], "INT64", [30, 41]),
                    tensor("income", [2], "FP64", [1.5, 2.5]),
                    tensor("city", [2], "BYTES", ["paris", "lyon"]),
                ]
            }
        )
        assert batch.n_rows == 2
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": ["paris", "lyon"]}
        assert batch.source == "v2:tensor-per-feature"

    def test_one_tensor_per_feature_column_vectors_nested(self) -> None:
        batch = decode(
            {
                "inputs": [
                    tensor("age", [3, 1], "INT32", [[30], [41], [52]]),
                    tensor("income", [3, 1], "FP32", [1.0, 2.0, 3.0]),  # flat data, 2-D shape
                ]
            }
        )
        assert batch.n_rows == 3
        assert batch.columns == {"age": [30, 41, 52], "income": [1.0, 2.0, 3.0]}

    def test_feature_order_of_inputs_does_not_matter(self) -> None:
        batch = decode(
            {
                "inputs": [
                    tensor("city", [1], "BYTES", ["nice"]),
                    tensor("age", [1], "INT64", [5]),
                ]
            }
        )
        assert batch.columns == {"city": ["nice"], "age": [5]}

    def test_matrix_in_profile_order(self) -> None:
        batch = decode(
            {"inputs": [tensor("input-0", [2, 3], "FP64", [[30, 1.5, 7], [41, 2.5, 8]])]}
        )
        assert batch.n_rows == 2
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": [7, 8]}
        assert batch.source == "v2:matrix"

    def test_matrix_with_flat_data(self) -> None:
        batch = decode({"inputs": [tensor("x", [2, 3], "FP32", [1, 2, 3, 4, 5, 6])]})
        assert batch.columns == {"age": [1, 4], "income": [2, 5], "city": [3, 6]}

    def test_single_feature_1d(self) -> None:
        batch = v2.decode_request(
            body({"inputs": [tensor("input-0", [3], "FP64", [0.1, 0.2, 0.3])]}), ["only"]
        )
        assert batch.columns == {"only": [0.1, 0.2, 0.3]}
        assert batch.n_rows == 3
        assert batch.source == "v2:single-feature"

    def test_single_feature_column_matrix(self) -> None:
        batch = v2.decode_request(
            body({"inputs": [tensor("input-0", [2, 1], "FP64", [[0.1], [0.2]])]}), ["only"]
        )
        assert batch.columns == {"only": [0.1, 0.2]}

    @pytest.mark.parametrize(
        ("datatype", "data"),
        [
            ("BOOL", [True, False]),
            ("BYTES", ["a", "b"]),
            ("UINT8", [0, 255]),
            ("INT8", [-128, 127]),
            ("INT64", [2**62, -(2**62)]),
            ("UINT64", [2**64 - 1, 0]),
            ("FP16", [0.5, 1.0]),
            ("FP32", [1.25, -2.0]),
            ("FP64", [1e300, -1e-300]),
        ],
    )
    def test_datatypes_keep_wire_values(self, datatype: str, data: list[Any]) -> None:
        batch = decode({"inputs": [tensor("age", [2], datatype, data)]})
        assert batch.columns["age"] == data
        assert [type(v) for v in batch.columns["age"]] == [type(v) for v in data]

    def test_parameters_content_type_is_ignored(self) -> None:
        plain = {
            "inputs": [
                tensor("age", [2], "INT64", [1, 2]),
                tensor("city", [2], "BYTES", ["a", "b"]),
            ]
        }
        with_params = {
            "id": "r1",
            "parameters": {"content_type": "pd"},
            "inputs": [
                tensor("age", [2], "INT64", [1, 2], parameters={"content_type": "np"}),
                tensor("city", [2], "BYTES", ["a", "b"], parameters={"content_type": "str"}),
            ],
            "outputs": [{"name": "predict"}],
        }
        assert decode(with_params).columns == decode(plain).columns

    def test_matrix_with_content_type_np(self) -> None:
        doc = {
            "parameters": {"content_type": "np"},
            "inputs": [
                tensor("predict", [1, 3], "FP64", [[1, 2, 3]], parameters={"content_type": "np"})
            ],
        }
        assert decode(doc).columns == {"age": [1], "income": [2], "city": [3]}

    def test_unknown_tensors_kept_as_unknown_columns(self) -> None:
        batch = decode(
            {
                "inputs": [
                    tensor("age", [2], "INT64", [1, 2]),
                    tensor("debug", [2], "BYTES", ["x", "y"]),
                    tensor("embedding", [2, 3], "FP32", [[1, 2, 3], [4, 5, 6]]),
                    tensor("mask", [2, 1], "BOOL", [[True], [False]]),
                ]
            }
        )
        assert batch.columns == {
            "age": [1, 2],
            "debug": ["x", "y"],
            "embedding": [[1, 2, 3], [4, 5, 6]],
            "mask": [True, False],
        }

    def test_nan_and_infinity_literals(self) -> None:
        raw = (
            b'{"inputs": [{"name": "income", "shape": [3], "datatype": "FP64",'
            b' "data": [NaN, Infinity, -Infinity]}]}'
        )
        values = v2.decode_request(raw, FEATURES).columns["income"]
        assert math.isnan(values[0])
        assert values[1] == math.inf
        assert values[2] == -math.inf

    def test_empty_batch(self) -> None:
        batch = decode({"inputs": [tensor("age", [0], "INT64", [])]})
        assert batch.n_rows == 0
        assert batch.columns == {"age": []}

    def test_scalar_tensor_is_one_row(self) -> None:
        batch = decode({"inputs": [tensor("age", [], "INT64", 7)]})
        assert batch.n_rows == 1
        assert batch.columns == {"age": [7]}

    def test_codec_registry(self) -> None:
        doc = body({"inputs": [tensor("age", [1], "INT64", [3])]})
        assert CODECS["v2"].decode_request(doc, FEATURES, "application/json").columns == {
            "age": [3]
        }


class TestRequestErrors:
    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"", "empty"),
            (b"   ", "empty"),
            (b"[1, 2]", "must be a JSON object, not an array"),
            (b'"text"', "must be a JSON object, not a string"),
            (b"{}", "non-empty 'inputs'"),
            (b'{"inputs": []}', "non-empty 'inputs'"),
            (b'{"inputs": {"age": [1]}}', "non-empty 'inputs'"),
            (b'{"inputs": [5]}', r"inputs\[0\] must be an object"),
            (b'{"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}', "'name'"),
            (
                b'{"inputs": [{"name": "", "shape": [1], "datatype": "FP64", "data": [1]}]}',
                "'name'",
            ),
            (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64"}]}', "has no 'data'"),
            (b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', "unknown datatype None"),
            (
                b'{"inputs": [{"name": "a", "shape": "1", "datatype": "FP64", "data": [1]}]}',
                "shape",
            ),
            (
                b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP64", "data": [1]}]}',
                "shape",
            ),
            (
                b'{"inputs": [{"name": "a", "shape": [1.0], "datatype": "FP64", "data": [1]}]}',
                "shape",
            ),
        ],
    )
    def test_malformed(self, raw: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            v2.decode_request(raw, FEATURES)

    @pytest.mark.parametrize("datatype", ["FLOAT", "fp32", "STRING", "INT128"])
    def test_unknown_datatype(self, datatype: str) -> None:
        with pytest.raises(DecodeError, match=rf"inputs\[0\] 'age': unknown datatype '{datatype}'"):
            decode({"inputs": [tensor("age", [1], datatype, [1])]})

    def test_shape_data_size_mismatch(self) -> None:
        with pytest.raises(DecodeError, match=r"'age': shape \[2, 2\] needs 4 values .* holds 3"):
            decode({"inputs": [tensor("age", [2, 2], "INT64", [1, 2, 3])]})

    def test_row_count_mismatch(self) -> None:
        with pytest.raises(DecodeError, match="input 'income' has 3 rows but input 'age' has 2"):
            decode(
                {
                    "inputs": [
                        tensor("age", [2], "INT64", [1, 2]),
                        tensor("income", [3], "FP64", [1, 2, 3]),
                    ]
                }
            )

    def test_duplicate_input_names(self) -> None:
        with pytest.raises(DecodeError, match="input 'age' appears more than once"):
            decode(
                {
                    "inputs": [
                        tensor("age", [1], "INT64", [1]),
                        tensor("age", [1], "INT64", [2]),
                    ]
                }
            )

    @pytest.mark.parametrize("shape", [[2, 2], [2, 4], [6], [1, 2, 3]])
    def test_matrix_of_wrong_shape(self, shape: list[int]) -> None:
        n = math.prod(shape)
        with pytest.raises(DecodeError, match=r"must be a 2-D tensor \[n, 3\]"):
            decode({"inputs": [tensor("input-0", shape, "FP64", list(range(n)))]})

    def test_feature_tensor_with_several_values_per_row(self) -> None:
        with pytest.raises(DecodeError, match=r"input 'age' has shape \[2, 2\]; a feature tensor"):
            decode(
                {
                    "inputs": [
                        tensor("age", [2, 2], "INT64", [[1, 2], [3, 4]]),
                        tensor("income", [2], "FP64", [1.0, 2.0]),
                    ]
                }
            )

    def test_over_deep_nesting(self) -> None:
        data: Any = 1
        for _ in range(40):
            data = [data]
        with pytest.raises(DecodeError, match="nested deeper than 32 levels"):
            decode({"inputs": [tensor("age", [1] * 40, "INT64", data)]})

    @pytest.mark.parametrize(("depth", "ok"), [(20, True), (32, True), (33, False)])
    def test_nesting_limit_boundary(self, depth: int, ok: bool) -> None:
        data: Any = 1
        for _ in range(depth):
            data = [data]
        doc = {"inputs": [tensor("age", [1] * depth, "INT64", data)]}
        if ok:
            assert decode(doc).columns == {"age": [1]}
        else:
            with pytest.raises(DecodeError, match="nested deeper than 32 levels"):
                decode(doc)

    def test_pathological_json_depth(self) -> None:
        with pytest.raises(DecodeError):
            v2.decode_request(b"[" * 100_000 + b"]" * 100_000, FEATURES)


# --- responses -----------------------------------------------------------------------------


def response(*outputs: dict[str, Any], **top: Any) -> bytes:
    return body({"model_name": "m", "outputs": list(outputs), **top})


class TestResponses:
    def test_output_by_name(self) -> None:
        raw = response(
            tensor("label", [2], "INT64", [0, 1]),
            tensor("proba", [2], "FP64", [0.2, 0.9]),
        )
        pred = v2.decode_response(raw, "proba", None)
        assert pred.values == [0.2, 0.9]
        assert pred.output_name == "proba"

    def test_first_output_by_default(self) -> None:
        raw = response(
            tensor("label", [2], "INT64", [0, 1]),
            tensor("proba", [2], "FP64", [0.2, 0.9]),
        )
        pred = v2.decode_response(raw, None, None)
        assert pred.values == [0, 1]
        assert pred.output_name == "label"

    def test_2d_output_default_last_column(self) -> None:
        raw = response(tensor("proba", [2, 3], "FP32", [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]))
        assert v2.decode_response(raw, None, None).values == [0.7, 0.2]
        assert v2.decode_response(raw, None, 0).values == [0.1, 0.5]
        assert v2.decode_response(raw, "proba", 1).values == [0.2, 0.3]
        assert v2.decode_response(raw, None, -3).values == [0.1, 0.5]

    def test_2d_output_column_out_of_range(self) -> None:
        raw = response(tensor("proba", [1, 2], "FP32", [[0.4, 0.6]]))
        with pytest.raises(DecodeError, match="output column 2 is outside its 2 columns"):
            v2.decode_response(raw, None, 2)

    def test_zero_width_output(self) -> None:
        raw = response(tensor("proba", [2, 0], "FP32", []))
        with pytest.raises(DecodeError, match="outside its 0 columns"):
            v2.decode_response(raw, None, None)

    def test_column_ignored_for_1d_output(self) -> None:
        raw = response(tensor("y", [3], "FP64", [1.0, 2.0, 3.0]))
        assert v2.decode_response(raw, None, 5).values == [1.0, 2.0, 3.0]

    @pytest.mark.parametrize(("version", "expected"), [("7", "7"), (3, "3"), (None, None)])
    def test_model_version(self, version: Any, expected: str | None) -> None:
        extra = {} if version is None else {"model_version": version}
        raw = response(tensor("y", [1], "FP64", [1.0]), **extra)
        assert v2.decode_response(raw, None, None).model_version == expected

    def test_missing_output(self) -> None:
        raw = response(tensor("label", [1], "INT64", [1]))
        with pytest.raises(DecodeError, match="no output named 'proba'"):
            v2.decode_response(raw, "proba", None)

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b'{"outputs": []}', "no 'outputs'"),
            (b'{"model_name": "m"}', "no 'outputs'"),
            (b"[1]", "response must be a JSON object"),
            (b'{"outputs": [1]}', r"outputs\[0\] must be an object"),
            (
                b'{"outputs": [{"name": "y", "shape": [2], "datatype": "FP64", "data": [1]}]}',
                "needs 2 values",
            ),
            (b"<html>", "not valid JSON"),
        ],
    )
    def test_malformed_response(self, raw: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            v2.decode_response(raw, None, None)

    def test_nan_prediction(self) -> None:
        raw = b'{"outputs": [{"name": "y", "shape": [2], "datatype": "FP64", "data": [NaN, 1.0]}]}'
        values = v2.decode_response(raw, None, None).values
        assert math.isnan(values[0])
        assert values[1] == 1.0


@pytest.mark.parametrize("datatype", [{}, [], ["FP64"], 1, None, True])
def test_a_datatype_that_is_not_a_string_is_a_decode_error(datatype: object) -> None:
    body = json.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": datatype, "data": [1]}]})
    with pytest.raises(DecodeError, match="unknown datatype"):
        v2.decode_request(body.encode(), ["a"])
