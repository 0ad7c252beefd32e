"""MLflow scoring server: JSON input formats, CSV, and response shapes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.errors import DecodeError
from app.protocols import mlflow
from app.protocols.codecs import CODECS

FEATURES = ["age", "income", "city"]


def decode(doc: Any, features: list[str] = FEATURES, content_type: str = "") -> Any:
    return mlflow.decode_request(json.dumps(doc).encode(), features, content_type)


def csv_decode(text: str, content_type: str = "text/csv") -> Any:
    return mlflow.decode_request(text.encode(), FEATURES, content_type)


def respond(doc: Any, output: str | None = None, column: int | None = None) -> Any:
    return mlflow.decode_response(json.dumps(doc).encode(), output, column)


class TestDataframeSplit:
    def test_with_columns(self) -> None:
        batch = decode(
            {
                "dataframe_split": {
                    "columns": ["city", "age"],
                    "index": [0, 1],
                    "data": [["paris", 30], ["lyon", 41]],
                }
            }
        )
        assert batch.n_rows == 2
        assert batch.columns == {"city": ["paris", "lyon"], "age": [30, 41]}
        assert batch.source == "mlflow:dataframe_split"

    def test_without_columns_uses_profile_order(self) -> None:
        batch = decode({"dataframe_split": {"data": [[30, 1.5, "paris"]]}})
        assert batch.columns == {"age": [30], "income": [1.5], "city": ["paris"]}

    def test_without_columns_wrong_width(self) -> None:
        with pytest.raises(DecodeError, match="row 0 has 2 values; the profile has 3"):
            decode({"dataframe_split": {"data": [[30, 1.5]]}})

    def test_duplicate_columns(self) -> None:
        with pytest.raises(DecodeError, match=r"'dataframe_split\.columns' names 'age' twice"):
            decode({"dataframe_split": {"columns": ["age", "city", "age"], "data": [[1, "a", 2]]}})

    def test_ragged_row(self) -> None:
        with pytest.raises(
            DecodeError, match=r"'dataframe_split\.data' row 1 has 1 values; columns has 2"
        ):
            decode({"dataframe_split": {"columns": ["age", "city"], "data": [[1, "a"], [2]]}})

    def test_row_not_a_list(self) -> None:
        with pytest.raises(DecodeError, match="row 0 has dict values"):
            decode({"dataframe_split": {"columns": ["age"], "data": [{"age": 1}]}})

    @pytest.mark.parametrize(
        ("split", "message"),
        [
            ([], "'dataframe_split' must be a JSON object"),
            ({"columns": ["a"]}, "needs a 'data' list"),
            ({"columns": "a", "data": []}, "must be a list of strings"),
            ({"columns": [1], "data": []}, "must be a list of strings"),
        ],
    )
    def test_malformed(self, split: Any, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            decode({"dataframe_split": split})

    def test_empty_data(self) -> None:
        batch = decode({"dataframe_split": {"columns": ["age"], "data": []}})
        assert batch.n_rows == 0
        assert batch.columns == {"age": []}


class TestOtherJsonFormats:
    def test_dataframe_records(self) -> None:
        batch = decode({"dataframe_records": [{"age": 1, "city": "a"}, {"age": 2, "income": 3.0}]})
        assert batch.n_rows == 2
        assert batch.columns == {"age": [1, 2], "city": ["a", None], "income": [None, 3.0]}

    def test_instances_rows(self) -> None:
        batch = decode({"instances": [[1, 2.0, "a"], [3, 4.0, "b"]]})
        assert batch.columns == {"age": [1, 3], "income": [2.0, 4.0], "city": ["a", "b"]}

    def test_instances_columns(self) -> None:
        batch = decode({"instances": {"age": [1, 3], "city": ["a", "b"]}})
        assert batch.n_rows == 2
        assert batch.columns == {"age": [1, 3], "city": ["a", "b"]}

    def test_inputs_dict(self) -> None:
        batch = decode({"inputs": {"age": [1], "income": 2.5}})
        assert batch.n_rows == 1
        assert batch.columns == {"age": [1], "income": [2.5]}

    def test_inputs_list(self) -> None:
        batch = decode({"inputs": [{"age": 1}, {"age": 2}]})
        assert batch.columns == {"age": [1, 2]}

    def test_inputs_scalars_single_feature(self) -> None:
        batch = decode({"inputs": [0.5, 0.6]}, ["x"])
        assert batch.columns == {"x": [0.5, 0.6]}

    def test_params_key_is_ignored(self) -> None:
        batch = decode({"dataframe_records": [{"age": 1}], "params": {"k": 1}})
        assert batch.columns == {"age": [1]}

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            ({}, r"exactly one of .* \(found: none\)"),
            ({"data": [[1]]}, r"\(found: none\)"),
            ({"instances": [], "inputs": []}, r"\(found: instances, inputs\)"),
            (
                {"dataframe_split": {"data": []}, "dataframe_records": []},
                r"\(found: dataframe_split, dataframe_records\)",
            ),
            ([1, 2], "must be a JSON object"),
            ({"dataframe_records": {"age": [1]}}, "'dataframe_records' must be a list of rows"),
        ],
    )
    def test_errors(self, doc: Any, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            decode(doc)

    def test_nan_literal(self) -> None:
        raw = b'{"dataframe_records": [{"income": NaN}]}'
        assert math.isnan(
            mlflow.decode_request(raw, FEATURES, "application/json").columns["income"][0]
        )


class TestCsv:
    def test_numbers_strings_and_empty_cells(self) -> None:
        batch = csv_decode("age,income,city\n30,1.5,paris\n,2e3,\n-4,,lyon\n")
        assert batch.n_rows == 3
        assert batch.columns == {
            "age": [30, None, -4],
            "income": [1.5, 2000.0, None],
            "city": ["paris", None, "lyon"],
        }
        assert [type(v) for v in batch.columns["age"]] == [int, type(None), int]
        assert type(batch.columns["income"][1]) is float
        assert batch.source == "mlflow:csv"

    def test_quoted_fields_and_charset_parameter(self) -> None:
        batch = csv_decode('city,note\n"paris, france","say ""hi"""\n', "text/csv; charset=utf-8")
        assert batch.columns == {"city": ["paris, france"], "note": ['say "hi"']}

    def test_crlf_and_trailing_blank_lines(self) -> None:
        batch = csv_decode("age,city\r\n1,a\r\n2,b\r\n\r\n")
        assert batch.n_rows == 2
        assert batch.columns == {"age": [1, 2], "city": ["a", "b"]}

    def test_header_only(self) -> None:
        batch = csv_decode("age,city\n")
        assert batch.n_rows == 0
        assert batch.columns == {"age": [], "city": []}

    def test_ragged_row(self) -> None:
        with pytest.raises(DecodeError, match="CSV row 1 has 3 fields; the header has 2"):
            csv_decode("age,city\n1,a\n2,b,c\n")

    def test_duplicate_header(self) -> None:
        with pytest.raises(DecodeError, match="CSV header names 'age' twice"):
            csv_decode("age,city,age\n1,a,2\n")

    def test_empty_body(self) -> None:
        with pytest.raises(DecodeError, match="no header row"):
            csv_decode("")

    def test_not_utf8(self) -> None:
        with pytest.raises(DecodeError, match="CSV body is not UTF-8"):
            mlflow.decode_request(b"age\n\xff\xfe\n", FEATURES, "text/csv")

    def test_json_content_type_is_not_csv(self) -> None:
        with pytest.raises(DecodeError, match="not valid JSON"):
            csv_decode("age\n1\n", "application/json")

    def test_codec_registry_passes_content_type(self) -> None:
        batch = CODECS["mlflow"].decode_request(b"age\n7\n", FEATURES, "text/csv")
        assert batch.columns == {"age": [7]}


class TestResponses:
    def test_predictions_list(self) -> None:
        pred = respond({"predictions": [0.1, 0.7]})
        assert pred.values == [0.1, 0.7]
        assert pred.output_name == "predictions"

    def test_bare_list(self) -> None:
        assert respond([1, 0, 1]).values == [1, 0, 1]

    def test_list_of_dicts(self) -> None:
        doc = [{"label": "a", "score": 0.3}, {"label": "b", "score": 0.9}]
        assert respond(doc, "score").values == [0.3, 0.9]
        assert respond(doc).values == ["a", "b"]
        assert respond({"predictions": doc}, "label").values == ["a", "b"]

    def test_list_of_lists_picks_column(self) -> None:
        doc = {"predictions": [[0.2, 0.8], [0.6, 0.4]]}
        assert respond(doc).values == [0.8, 0.4]
        assert respond(doc, column=0).values == [0.2, 0.6]

    def test_columns_oriented_dict(self) -> None:
        doc = {"predictions": {"label": [1, 0], "score": [0.9, 0.2]}}
        assert respond(doc, "score").values == [0.9, 0.2]
        assert respond(doc).values == [1, 0]  # first column by default
        assert respond(doc, "absent").values == [1, 0]

    def test_columns_oriented_dict_of_index_maps(self) -> None:
        doc = {"predictions": {"score": {"0": 0.5, "1": 0.25}}}
        pred = respond(doc, "score")
        assert pred.values == [0.5, 0.25]
        assert pred.output_name == "score"

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            ({"outputs": [1]}, "response has no 'predictions'"),
            ({"predictions": 3}, "predictions must be a list"),
            ({"predictions": {}}, "predictions must be a list"),
            ("x", "predictions must be a list"),
        ],
    )
    def test_malformed(self, doc: Any, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            respond(doc)
