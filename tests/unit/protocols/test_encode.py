"""Rows → request bodies: what each protocol's decoder reads back, and the V2 datatypes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.errors import ConfigError
from app.protocols import mlflow, v1, v2
from app.protocols.encode import MATRIX_INPUT, encode_rows, rows_to_matrix, v2_datatype

FEATURES = ["age", "income", "status", "owner"]
ROWS: list[dict[str, Any]] = [
    {"age": 30, "income": 2500.5, "status": "single", "owner": True},
    {"age": 41, "income": None, "status": "married", "owner": False},
    {"age": 52, "income": 4000.0, "status": "single", "owner": True},
]
COLUMNS = {f: [r[f] for r in ROWS] for f in FEATURES}


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        ([1.5, 2.0], "FP64"),
        ([1, 2.5], "FP64"),
        ([1, 2], "INT64"),
        ([1, None], "FP64"),
        ([True, False], "BOOL"),
        (["a", "b"], "BYTES"),
        (["a", 1], "BYTES"),
        ([None, None], "FP64"),
    ],
)
def test_v2_datatype(values: list[Any], datatype: str) -> None:
    assert v2_datatype(values) == datatype


def test_v2_columns_one_tensor_per_feature_with_pandas_hint() -> None:
    body = encode_rows("v2", ROWS, FEATURES, output_name="predict_proba", request_id="p-1")
    doc = json.loads(body)
    assert doc["id"] == "p-1"
    assert doc["parameters"] == {"content_type": "pd"}
    assert doc["outputs"] == [{"name": "predict_proba"}]
    by_name = {t["name"]: t for t in doc["inputs"]}
    assert [t["name"] for t in doc["inputs"]] == FEATURES
    assert {n: t["datatype"] for n, t in by_name.items()} == {
        "age": "INT64", "income": "FP64", "status": "BYTES", "owner": "BOOL",
    }  # fmt: skip
    assert all(t["shape"] == [3] for t in doc["inputs"])
    assert by_name["income"]["data"] == [2500.5, None, 4000.0]
    batch = v2.decode_request(body, FEATURES)
    assert batch.n_rows == 3
    assert batch.columns == COLUMNS


def test_v2_without_output_name_asks_for_nothing() -> None:
    doc = json.loads(encode_rows("v2", ROWS, FEATURES))
    assert "outputs" not in doc
    assert "id" not in doc


def test_v2_matrix_is_one_fp64_tensor_in_feature_order() -> None:
    order = ["income", "age", "owner"]
    body = encode_rows("v2", ROWS, order, "matrix")
    doc = json.loads(body)
    assert "parameters" not in doc
    (tensor,) = doc["inputs"]
    assert tensor["name"] == MATRIX_INPUT
    assert tensor["shape"] == [3, 3]
    assert tensor["datatype"] == "FP64"
    assert tensor["data"] == [[2500.5, 30.0, 1.0], [None, 41.0, 0.0], [4000.0, 52.0, 1.0]]
    batch = v2.decode_request(body, order)
    assert batch.columns["age"] == [30.0, 41.0, 52.0]


def test_matrix_refuses_strings() -> None:
    with pytest.raises(ConfigError, match="'status'"):
        rows_to_matrix(ROWS, ["age", "status"])
    for protocol in ("v2", "v1", "mlflow"):
        with pytest.raises(ConfigError):
            encode_rows(protocol, ROWS, FEATURES, "matrix")


def test_v1_instances_objects_and_lists() -> None:
    body = encode_rows("v1", ROWS, FEATURES)
    assert json.loads(body) == {"instances": ROWS}
    assert v1.decode_request(body, FEATURES).columns == COLUMNS
    order = ["age", "income"]
    body = encode_rows("v1", ROWS, order, "matrix")
    assert json.loads(body) == {"instances": [[30.0, 2500.5], [41.0, None], [52.0, 4000.0]]}
    assert v1.decode_request(body, order).columns["income"] == [2500.5, None, 4000.0]


def test_mlflow_dataframe_split_and_inputs() -> None:
    body = encode_rows("mlflow", ROWS, FEATURES)
    doc = json.loads(body)
    assert doc["dataframe_split"]["columns"] == FEATURES
    assert doc["dataframe_split"]["data"][1] == [41, None, "married", False]
    assert mlflow.decode_request(body, FEATURES).columns == COLUMNS
    order = ["age", "owner"]
    body = encode_rows("mlflow", ROWS, order, "matrix")
    assert json.loads(body) == {"inputs": [[30.0, 1.0], [41.0, 0.0], [52.0, 1.0]]}


def test_absent_keys_are_missing_values() -> None:
    rows: list[dict[str, Any]] = [{"age": 1}, {"age": 2, "income": 3.5}]
    doc = json.loads(encode_rows("v2", rows, ["age", "income"]))
    assert doc["inputs"][1]["data"] == [None, 3.5]
    assert json.loads(encode_rows("v1", rows, ["age", "income"]))["instances"][0] == {
        "age": 1, "income": None,
    }  # fmt: skip


def test_nan_becomes_null() -> None:
    doc = json.loads(encode_rows("v1", [{"x": float("nan")}], ["x"]))
    assert doc == {"instances": [{"x": None}]}


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown protocol"):
        encode_rows("grpc", ROWS, FEATURES)
