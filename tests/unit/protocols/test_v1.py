"""TF Serving / KServe V1 requests (`instances`, `inputs`) and responses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.errors import DecodeError
from app.protocols import v1
from app.protocols.codecs import CODECS

FEATURES = ["age", "income", "city"]


def decode(doc: Any, features: list[str] = FEATURES) -> Any:
    return v1.decode_request(json.dumps(doc).encode(), features)


def respond(doc: Any, output: str | None = None, column: int | None = None) -> Any:
    return v1.decode_response(json.dumps(doc).encode(), output, column)


class TestInstances:
    def test_objects(self) -> None:
        batch = decode(
            {
                "instances": [
                    {"age": 30, "income": 1.5, "city": "paris"},
                    {"age": 41, "income": 2.5, "city": "lyon"},
                ]
            }
        )
        assert batch.n_rows == 2
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": ["paris", "lyon"]}
        assert batch.source == "instances:objects"

    def test_objects_missing_key_is_none(self) -> None:
        batch = decode({"instances": [{"age": 30}, {"income": 2.0, "city": "x"}, {}]})
        assert batch.n_rows == 3
        assert batch.columns == {
            "age": [30, None, None],
            "income": [None, 2.0, None],
            "city": [None, "x", None],
        }

    def test_objects_keep_unknown_keys(self) -> None:
        batch = decode({"instances": [{"age": 1, "extra": [1, 2]}]})
        assert batch.columns == {"age": [1], "extra": [[1, 2]]}

    def test_lists_in_profile_order(self) -> None:
        batch = decode({"instances": [[30, 1.5, "paris"], [41, 2.5, "lyon"]]})
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5], "city": ["paris", "lyon"]}
        assert batch.source == "instances:lists"

    def test_list_of_wrong_length_names_the_row(self) -> None:
        with pytest.raises(
            DecodeError, match=r"'instances' row 1 has 2 values; the profile has 3 features"
        ) as exc:
            decode({"instances": [[1, 2, "a"], [1, 2]]})
        assert "age, income, city" in str(exc.value)

    def test_mixed_row_shapes(self) -> None:
        with pytest.raises(
            DecodeError, match="'instances' row 1 is list; rows must all be objects"
        ):
            decode({"instances": [{"age": 1}, [1, 2, 3]]})
        with pytest.raises(DecodeError, match="'instances' row 1 is dict; rows must all be lists"):
            decode({"instances": [[1, 2, 3], {"age": 1}]})

    def test_scalars_for_one_feature(self) -> None:
        batch = decode({"instances": [1.0, 2.0, None]}, ["x"])
        assert batch.columns == {"x": [1.0, 2.0, None]}
        assert batch.n_rows == 3
        assert batch.source == "instances:scalars"

    def test_scalars_then_list_for_one_feature(self) -> None:
        with pytest.raises(DecodeError, match="'instances' row 1 mixes shapes"):
            decode({"instances": [1.0, [2.0]]}, ["x"])

    def test_scalars_for_several_features(self) -> None:
        with pytest.raises(DecodeError, match="rows must be objects or lists; got float"):
            decode({"instances": [1.0, 2.0]})

    def test_empty_instances(self) -> None:
        batch = decode({"instances": []})
        assert batch.n_rows == 0
        assert batch.columns == {}

    def test_instances_not_a_list(self) -> None:
        with pytest.raises(DecodeError, match="'instances' must be a list of rows"):
            decode({"instances": {"age": [1]}})

    def test_nan_literal_in_instances(self) -> None:
        raw = b'{"instances": [{"age": NaN, "income": -Infinity}]}'
        batch = v1.decode_request(raw, FEATURES)
        assert math.isnan(batch.columns["age"][0])
        assert batch.columns["income"] == [-math.inf]


class TestInputs:
    def test_columnar(self) -> None:
        batch = decode({"inputs": {"age": [30, 41], "income": [1.5, 2.5]}})
        assert batch.n_rows == 2
        assert batch.columns == {"age": [30, 41], "income": [1.5, 2.5]}
        assert batch.source == "inputs:columns"

    def test_columnar_scalar_is_one_row(self) -> None:
        batch = decode({"inputs": {"age": 30, "city": "paris"}})
        assert batch.n_rows == 1
        assert batch.columns == {"age": [30], "city": ["paris"]}

    def test_columnar_length_mismatch(self) -> None:
        with pytest.raises(
            DecodeError, match="column 'income' has 1 values; earlier columns have 2"
        ):
            decode({"inputs": {"age": [1, 2], "income": [1.0]}})

    def test_row_form_objects(self) -> None:
        batch = decode({"inputs": [{"age": 1, "city": "a"}, {"age": 2}]})
        assert batch.columns == {"age": [1, 2], "city": ["a", None]}

    def test_row_form_lists(self) -> None:
        batch = decode({"inputs": [[1, 2.0, "a"]]})
        assert batch.columns == {"age": [1], "income": [2.0], "city": ["a"]}

    def test_row_form_wrong_length(self) -> None:
        with pytest.raises(DecodeError, match="'inputs' row 0 has 4 values"):
            decode({"inputs": [[1, 2.0, "a", "b"]]})

    def test_codec_registry(self) -> None:
        raw = json.dumps({"inputs": {"age": [1]}}).encode()
        assert CODECS["v1"].decode_request(raw, FEATURES, "").columns == {"age": [1]}


class TestRequestErrors:
    def test_both_keys(self) -> None:
        with pytest.raises(DecodeError, match="both 'instances' and 'inputs'"):
            decode({"instances": [], "inputs": {}})

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b'{"signature_name": "x"}', "needs 'instances' or 'inputs'"),
            (b"[]", "must be a JSON object"),
            (b"{", "not valid JSON"),
            (b"", "empty"),
        ],
    )
    def test_malformed(self, raw: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            v1.decode_request(raw, FEATURES)


class TestResponses:
    def test_predictions_scalars(self) -> None:
        pred = respond({"predictions": [0.1, 0.9, None]})
        assert pred.values == [0.1, 0.9, None]
        assert pred.output_name == "predictions"
        assert pred.model_version is None

    def test_predictions_lists_default_last_column(self) -> None:
        doc = {"predictions": [[0.3, 0.7], [0.6, 0.4], [0.5]]}
        assert respond(doc).values == [0.7, 0.4, 0.5]  # a one-value row is that value
        assert respond(doc, column=0).values == [0.3, 0.6, 0.5]
        assert respond(doc, column=5).values == [None, None, 0.5]

    def test_predictions_dicts_by_output_name(self) -> None:
        doc = {
            "predictions": [{"label": 1, "proba": [0.2, 0.8]}, {"label": 0, "proba": [0.9, 0.1]}]
        }
        pred = respond(doc, "proba")
        assert pred.values == [0.8, 0.1]
        assert pred.output_name == "proba"
        assert respond(doc, "label").values == [1, 0]
        assert respond(doc).values == [1, 0]  # no name: the first key
        assert respond(doc, "missing").values == [None, None]

    def test_predictions_single_key_dict(self) -> None:
        assert respond({"predictions": [{"y": 3.5}]}, "other").values == [3.5]

    def test_empty_list_prediction_is_none(self) -> None:
        assert respond({"predictions": [[]]}).values == [None]

    def test_outputs_columnar(self) -> None:
        doc = {"outputs": {"scores": [[0.1, 0.9], [0.8, 0.2]], "classes": [1, 0]}}
        assert respond(doc, "classes").values == [1, 0]
        pred = respond(doc)
        assert pred.values == [0.9, 0.2]  # first output, last column
        assert pred.output_name == "outputs"

    def test_outputs_list(self) -> None:
        assert respond({"outputs": [1.0, 2.0]}).values == [1.0, 2.0]

    def test_model_version(self) -> None:
        assert respond({"predictions": [1], "model_version": 4}).model_version == "4"
        assert respond({"outputs": [1], "model_version": "b"}).model_version == "b"

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            ({"result": [1]}, "neither 'predictions' nor 'outputs'"),
            ({"predictions": 1}, "'predictions' must be a list"),
            ({"outputs": {}}, "'outputs' is empty"),
            ({"outputs": "x"}, "'outputs' must be a list"),
            ({"outputs": {"a": 3}}, "'outputs' must be a list"),
            ([1, 2], "response must be a JSON object"),
        ],
    )
    def test_malformed_response(self, doc: Any, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            respond(doc)
