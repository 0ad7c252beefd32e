"""Hostile and malformed requests against the real sidecar over HTTP on loopback.

One sidecar per protocol (v2, v1, mlflow), each in front of the stub model server. Every case
must come back quickly with the expected 4xx status and a JSON error that names the problem
(and the row and feature when the problem is in one), must not reach the model server, and
must leave the sidecar serving good requests. A few cases are valid input that the sidecar
deliberately forwards; they say so (`forwarded=True`) and are checked the other way round.
Cases aiohttp would refuse to produce (a body shorter than its Content-Length, broken chunked
encoding) are written as raw bytes on a plain socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from app.config import Settings, UpstreamSettings, ValidationSettings
from app.demo.data import FEATURES
from app.monitoring.profile import Profile
from tests.support.errors import protocol_error
from tests.support.sidecar import RunningSidecar, run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

LIMIT = 256 * 1024
MAX_ROWS = 100
DEADLINE = 5.0
V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}
PATHS = {"v2": "/v2/models/loan/infer", "v1": "/v1/models/loan:predict", "mlflow": "/invocations"}
JSON_CT = "application/json"


def row(**over: Any) -> dict[str, Any]:
    return good_row(**over)


def rows(n: int = 4, at: int | None = None, **over: Any) -> list[dict[str, Any]]:
    """n good rows; row `at` gets the overrides."""
    return [row(**over) if i == at else row() for i in range(n)]


LIT = "__literal__"


def dumps(doc: Any, literal: str | None = None) -> bytes:
    """JSON text, with the string `LIT` replaced by a raw literal (NaN, 1e400, …)."""
    text = json.dumps(doc)
    if literal is not None:
        assert f'"{LIT}"' in text
        text = text.replace(f'"{LIT}"', literal)
    return text.encode()


def v2_doc(rs: list[dict[str, Any]], types: dict[str, str] | None = None) -> dict[str, Any]:
    types = {**V2_TYPES, **(types or {})}
    return {
        "id": "hostile",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": name,
                "shape": [len(rs)],
                "datatype": types.get(name, "BYTES"),
                "data": [r[name] for r in rs],
            }
            for name in rs[0]
        ],
    }


def v2(rs: list[dict[str, Any]], literal: str | None = None, **types: str) -> bytes:
    return dumps(v2_doc(rs, types), literal)


def v1(rs: list[Any], literal: str | None = None) -> bytes:
    return dumps({"instances": rs}, literal)


def records(rs: list[Any], literal: str | None = None) -> bytes:
    return dumps({"dataframe_records": rs}, literal)


def split(rs: list[dict[str, Any]], literal: str | None = None) -> bytes:
    doc = {"dataframe_split": {"columns": FEATURES, "data": [[r[f] for f in FEATURES] for r in rs]}}
    return dumps(doc, literal)


def csv_body(*lines: str) -> bytes:
    good = "40,3000,married,employed,5000,true,renovate the kitchen"
    return "\n".join([",".join(FEATURES), *(good if x == "good" else x for x in lines)]).encode()


GOOD = {"v2": v2(rows(2)), "v1": v1(rows(2)), "mlflow": split(rows(2))}


@dataclass(frozen=True)
class Case:
    kind: str
    protocol: str
    body: bytes
    status: int
    error_type: str = "decode_error"
    needles: tuple[str, ...] = ()
    """Each appears (case-insensitively) in the message or the details."""
    row: int | None = None
    feature: str | None = None
    content_type: str | None = JSON_CT
    headers: tuple[tuple[str, str], ...] = ()
    forwarded: bool = False
    """Valid input that the sidecar deliberately forwards (status is then the model's 200)."""


def deep_value(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _dup_key_row() -> bytes:
    good = json.dumps(row())[1:-1]
    body = f'{{"instances": [{{{good}}}, {{"age": "forty", {good}}}, {{{good}}}]}}'
    return body.encode()


def _gzip_bomb() -> bytes:
    return gzip.compress(b" " * (20 * 1024 * 1024), compresslevel=9)


CASES: list[Case] = [
    # --- not JSON at all, or not a JSON object ------------------------------------------------
    Case("invalid_json", "v2", b"{not json", 400, needles=("not valid JSON",)),
    Case("truncated_json", "v1", v1(rows(3))[:-25], 400, needles=("not valid JSON",)),
    Case("trailing_garbage", "v1", v1(rows(1)) + b" {}", 400, needles=("not valid JSON",)),
    Case("empty_body", "mlflow", b"", 400, needles=("empty",)),
    Case("whitespace_only_body", "v2", b" \r\n\t ", 400, needles=("empty",)),
    Case("top_level_number", "v1", b"42", 400, needles=("JSON object", "number")),
    Case("top_level_string", "mlflow", b'"dataframe_split"', 400, needles=("string",)),
    Case("top_level_null", "v2", b"null", 400, needles=("JSON object", "null")),
    Case("top_level_array", "v1", json.dumps(rows(2)).encode(), 400, needles=("array",)),
    Case("deeply_nested_body", "v2", b"[" * 100_000, 400, needles=("nested too deeply",)),
    Case(
        "deeply_nested_value",
        "v1",
        v1(rows(3, at=2, age=LIT), deep_value(1000)),
        422,
        "validation_error",
        ("wrong_type",),
        row=2,
        feature="age",
    ),
    # --- bytes that are not UTF-8 / text that is not Unicode ----------------------------------
    Case(
        "invalid_utf8",
        "mlflow",
        records(rows(2, at=1, purpose=LIT), '"caf\xe9"').replace(b"caf\xc3\xa9", b"caf\xe9"),
        400,
        needles=("not valid UTF-8", "0xe9"),
    ),
    Case(
        "utf16_body",
        "v2",
        "\ufeff".encode("utf-16-le") + v2(rows(1)).decode().encode("utf-16-le"),
        400,
        needles=("not valid UTF-8",),
    ),
    Case(
        "lone_surrogate_value",
        "v1",
        v1(rows(3, at=1, marital_status=LIT), '"\\ud800"'),
        400,
        needles=("lone surrogate", "\\ud800"),
        row=1,
        feature="marital_status",
    ),
    Case(
        "lone_surrogate_key",
        "mlflow",
        records([row(), {**row(), LIT: 1}]).replace(LIT.encode(), b"\\udfff"),
        400,
        needles=("lone surrogate", "key"),
        row=1,
    ),
    Case(
        "raw_control_character",
        "v2",
        v2(rows(2, at=1, purpose="tab\there")).replace(b"\\t", b"\x01"),
        400,
        needles=("control character",),
    ),
    Case(
        "raw_nul_byte",
        "v1",
        v1(rows(2, at=0, employment="NUL")).replace(b"NUL", b"\x00"),
        400,
        needles=("control character",),
    ),
    Case(
        "escaped_nul_in_number",
        "mlflow",
        records(rows(2, at=1, age="\u0000")),
        422,
        "validation_error",
        ("wrong_type",),
        row=1,
        feature="age",
    ),
    Case(
        "emoji_in_number",
        "v2",
        v2(rows(4, at=3, age="\U0001f600"), age="BYTES"),
        422,
        "validation_error",
        ("wrong_type", "\U0001f600"),
        row=3,
        feature="age",
    ),
    Case(
        "zero_width_feature_name",
        "v1",
        v1([row(), {**{k: v for k, v in row().items() if k != "age"}, "age\u200b": 40}]),
        422,
        "validation_error",
        ("unknown_feature", "missing"),
        feature="age\u200b",
    ),
    # --- numbers beyond float64 ---------------------------------------------------------------
    Case(
        "nan_literal",
        "v1",
        v1(rows(3, at=1, age=LIT), "NaN"),
        422,
        "validation_error",
        ("non_finite", "NaN"),
        row=1,
        feature="age",
    ),
    Case(
        "infinity_literal",
        "v2",
        v2(rows(3, at=2, monthly_income=LIT), "Infinity"),
        422,
        "validation_error",
        ("non_finite", "Infinity"),
        row=2,
        feature="monthly_income",
    ),
    Case(
        "minus_infinity_literal",
        "mlflow",
        split(rows(2, at=0, loan_amount=LIT), "-Infinity"),
        422,
        "validation_error",
        ("non_finite", "-Infinity"),
        row=0,
        feature="loan_amount",
    ),
    Case(
        "overflowing_float",
        "v2",
        v2(rows(2, at=1, monthly_income=LIT), "1e400"),
        422,
        "validation_error",
        ("non_finite",),
        row=1,
        feature="monthly_income",
    ),
    Case(
        "overflowing_negative_float",
        "v1",
        v1(rows(2, at=0, loan_amount=LIT), "-1e400"),
        422,
        "validation_error",
        ("non_finite", "-Infinity"),
        row=0,
        feature="loan_amount",
    ),
    Case(
        "huge_integer_literal",
        "mlflow",
        records(rows(3, at=2, age=LIT), "1" + "0" * 400),
        422,
        "validation_error",
        ("non_finite",),
        row=2,
        feature="age",
    ),
    Case(
        "integer_past_python_digit_limit",
        "v1",
        v1(rows(2, at=1, age=LIT), "9" * 5000),
        422,
        "validation_error",
        ("non_finite",),
        row=1,
        feature="age",
    ),
    # --- empty and oversized batches ----------------------------------------------------------
    Case("empty_v2_inputs", "v2", b'{"inputs": []}', 400, needles=("non-empty 'inputs'",)),
    Case("empty_instances", "v1", b'{"instances": []}', 400, needles=("no rows",)),
    Case(
        "empty_dataframe_split",
        "mlflow",
        dumps({"dataframe_split": {"columns": FEATURES, "data": []}}),
        400,
        needles=("no rows",),
    ),
    Case(
        "zero_row_shape",
        "v2",
        dumps({"inputs": [{"name": "age", "shape": [0], "datatype": "INT64", "data": []}]}),
        400,
        needles=("no rows",),
    ),
    Case(
        "rows_over_max_rows",
        "v1",
        v1(rows(MAX_ROWS + 1)),
        413,
        "payload_too_large",
        (f"{MAX_ROWS + 1} rows", f"limit is {MAX_ROWS}"),
    ),
    Case(
        "rows_over_max_rows_v2",
        "v2",
        v2(rows(MAX_ROWS + 5)),
        413,
        "payload_too_large",
        (f"{MAX_ROWS + 5} rows",),
    ),
    Case(
        "body_over_limit",
        "v2",
        v2(rows(2, at=0, purpose="x" * (LIMIT + 10))),
        413,
        "payload_too_large",
        (f"{LIMIT}-byte limit",),
    ),
    Case(
        "gzip_bomb",
        "v1",
        _gzip_bomb(),
        413,
        "payload_too_large",
        ("decompressed",),
        headers=(("content-encoding", "gzip"),),
    ),
    Case(
        "corrupt_gzip",
        "mlflow",
        b"\x1f\x8b\x08\x00garbage-not-deflate",
        400,
        needles=("not valid gzip",),
        headers=(("content-encoding", "gzip"),),
    ),
    Case(
        "truncated_gzip",
        "v2",
        gzip.compress(v2(rows(3)))[:-12],
        400,
        needles=("truncated",),
        headers=(("content-encoding", "gzip"),),
    ),
    Case(
        "unsupported_content_encoding",
        "v1",
        v1(rows(1)),
        415,
        "unsupported_media_type",
        ("br", "gzip"),
        headers=(("content-encoding", "br"),),
    ),
    # --- V2 tensors of the wrong shape or type ------------------------------------------------
    Case(
        "shape_data_mismatch",
        "v2",
        dumps({"inputs": [{"name": "age", "shape": [3], "datatype": "INT64", "data": [1, 2]}]}),
        400,
        needles=("needs 3 values", "holds 2"),
        feature="age",
    ),
    Case(
        "negative_shape",
        "v2",
        dumps({"inputs": [{"name": "age", "shape": [-1], "datatype": "INT64", "data": [1]}]}),
        400,
        needles=("non-negative",),
        feature="age",
    ),
    Case(
        "unknown_v2_datatype",
        "v2",
        dumps({"inputs": [{"name": "age", "shape": [1], "datatype": "INT99", "data": [1]}]}),
        400,
        needles=("datatype", "INT99"),
        feature="age",
    ),
    Case(
        "string_in_int64_tensor",
        "v2",
        v2(rows(5, at=3, age="forty")),
        422,
        "validation_error",
        ("wrong_type", "forty"),
        row=3,
        feature="age",
    ),
    Case(
        "feature_tensor_2d",
        "v2",
        dumps(
            {
                "inputs": [
                    {"name": "age", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}
                ]
            }
        ),
        400,
        needles=("[n] or [n, 1]",),
        feature="age",
    ),
    Case(
        "tensor_without_data",
        "v2",
        dumps({"inputs": [{"name": "age", "shape": [1], "datatype": "INT64"}]}),
        400,
        needles=("no 'data'",),
        feature="age",
    ),
    Case(
        "tensor_name_not_string",
        "v2",
        dumps({"inputs": [{"name": 7, "shape": [1], "datatype": "INT64", "data": [1]}]}),
        400,
        needles=("inputs[0]", "'name'"),
    ),
    Case(
        "inputs_not_a_list",
        "v2",
        dumps({"inputs": {"age": [1]}}),
        400,
        needles=("'inputs' list",),
    ),
    Case(
        "tensors_disagree_on_rows",
        "v2",
        dumps(
            {
                "inputs": [
                    {"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                    {"name": "loan_amount", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]},
                ]
            }
        ),
        400,
        needles=("3 rows", "has 2"),
        feature="loan_amount",
    ),
    Case(
        "duplicate_v2_input",
        "v2",
        dumps({"inputs": [*v2_doc(rows(2))["inputs"], v2_doc(rows(2))["inputs"][0]]}),
        400,
        needles=("more than once",),
        feature="age",
    ),
    Case(
        "duplicate_key_in_tensor",
        "v2",
        v2(rows(1)).replace(b'"data": [40]', b'"data": ["forty"], "data": [40]'),
        400,
        needles=("'data'", "more than once", "inputs[0]"),
    ),
    Case(
        "missing_feature",
        "v2",
        dumps({"inputs": [t for t in v2_doc(rows(2))["inputs"] if t["name"] != "age"]}),
        422,
        "validation_error",
        ("missing",),
        feature="age",
    ),
    # --- rows of the wrong shape or type (V1, MLflow) -----------------------------------------
    Case(
        "string_where_number_expected",
        "v1",
        v1(rows(5, at=3, age="forty")),
        422,
        "validation_error",
        ("wrong_type", "forty"),
        row=3,
        feature="age",
    ),
    Case(
        "bool_where_number_expected",
        "v1",
        v1(rows(2, at=1, monthly_income=True)),
        422,
        "validation_error",
        ("wrong_type",),
        row=1,
        feature="monthly_income",
    ),
    Case(
        "nested_list_where_scalar_expected",
        "mlflow",
        records(rows(3, at=1, monthly_income=[1.0, 2.0])),
        422,
        "validation_error",
        ("wrong_type",),
        row=1,
        feature="monthly_income",
    ),
    Case(
        "object_where_scalar_expected",
        "v1",
        v1(rows(3, at=2, age={"years": 40})),
        422,
        "validation_error",
        ("wrong_type", "years"),
        row=2,
        feature="age",
    ),
    Case(
        "unknown_feature",
        "v1",
        v1([row(), {**row(), "favourite_colour": "blue"}]),
        422,
        "validation_error",
        ("unknown_feature",),
        feature="favourite_colour",
    ),
    Case(
        "duplicate_key_in_row",
        "v1",
        _dup_key_row(),
        400,
        needles=("'age'", "more than once", "instances[1]"),
        row=1,
        feature="age",
    ),
    Case(
        "duplicate_top_level_key",
        "mlflow",
        b'{"dataframe_records": "nope", ' + records(rows(1))[1:],
        400,
        needles=("'dataframe_records'", "more than once"),
    ),
    Case(
        "rows_mix_objects_and_lists",
        "v1",
        v1([row(), [1, 2, 3, 4, 5, 6, 7], row()]),
        400,
        needles=("row 1", "objects"),
        row=1,
    ),
    Case(
        "list_row_of_wrong_width",
        "v1",
        v1([[40, 3000.0, "married"]]),
        400,
        needles=("row 0", "3 values", "7 features"),
        row=0,
    ),
    Case(
        "no_known_mlflow_key",
        "mlflow",
        dumps({"data": [row()]}),
        400,
        needles=("exactly one of", "found: none"),
    ),
    Case(
        "two_mlflow_keys",
        "mlflow",
        dumps({"instances": [row()], "dataframe_records": [row()]}),
        400,
        needles=("exactly one of", "found: dataframe_records, instances"),
    ),
    Case(
        "split_columns_not_strings",
        "mlflow",
        dumps({"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}),
        400,
        needles=("list of strings",),
    ),
    Case(
        "split_ragged_row",
        "mlflow",
        dumps({"dataframe_split": {"columns": FEATURES, "data": [list(row().values()), [1]]}}),
        400,
        needles=("row 1", "1 values"),
        row=1,
    ),
    # --- CSV (MLflow) -------------------------------------------------------------------------
    Case(
        "csv_ragged_row",
        "mlflow",
        csv_body("good", "good", "41,3000"),
        400,
        needles=("CSV row 2", "2 fields"),
        row=2,
        content_type="text/csv",
    ),
    Case(
        "csv_unterminated_quote",
        "mlflow",
        csv_body("good", '40,3000,married,employed,5000,true,"renovate'),
        400,
        needles=("CSV", "line 3"),
        content_type="text/csv",
    ),
    Case(
        "csv_text_after_quote",
        "mlflow",
        csv_body('40,3000,"married"x,employed,5000,true,kitchen'),
        400,
        needles=("CSV", "line 2"),
        content_type="text/csv",
    ),
    Case(
        "csv_duplicate_header",
        "mlflow",
        b"age,age\n1,2\n",
        400,
        needles=("'age' twice",),
        feature="age",
        content_type="text/csv",
    ),
    Case(
        "csv_header_only",
        "mlflow",
        csv_body(),
        400,
        needles=("no rows",),
        content_type="text/csv; charset=utf-8",
    ),
    Case(
        "csv_invalid_utf8",
        "mlflow",
        csv_body("good").replace(b"kitchen", b"kitch\xffn"),
        400,
        needles=("not UTF-8",),
        content_type="text/csv",
    ),
    Case(
        "csv_string_in_number",
        "mlflow",
        csv_body("good", "good", "forty,3000,married,employed,5000,true,kitchen"),
        422,
        "validation_error",
        ("wrong_type", "forty"),
        row=2,
        feature="age",
        content_type="text/csv",
    ),
    Case(
        "csv_field_over_field_limit",
        "mlflow",
        csv_body("good", "40,3000,married,employed,5000,true," + "x" * 140_000),
        400,
        needles=("field limit",),
        content_type="text/csv",
    ),
    # --- wrong content types ------------------------------------------------------------------
    Case(
        "xml_content_type",
        "v2",
        b"<inputs><age>40</age></inputs>",
        415,
        "unsupported_media_type",
        ("text/xml", "application/json"),
        content_type="text/xml",
    ),
    Case(
        "multipart_form_data",
        "v1",
        b'--b\r\nContent-Disposition: form-data; name="instances"\r\n\r\n[]\r\n--b--\r\n',
        415,
        "unsupported_media_type",
        ("multipart/form-data",),
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "form_urlencoded",
        "mlflow",
        b"instances=%5B%5D",
        415,
        "unsupported_media_type",
        ("application/x-www-form-urlencoded", "text/csv"),
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "csv_to_a_json_protocol",
        "v1",
        csv_body("good"),
        415,
        "unsupported_media_type",
        ("text/csv",),
        content_type="text/csv",
    ),
    # --- valid input the sidecar deliberately forwards ----------------------------------------
    Case(
        "json_without_content_type",
        "v1",
        v1(rows(2)),
        200,
        content_type=None,
        forwarded=True,
    ),
    Case(
        "json_with_charset_parameter",
        "v2",
        v2(rows(2)),
        200,
        content_type="Application/JSON; charset=UTF-8",
        forwarded=True,
    ),
    Case(
        "utf8_bom",
        "v1",
        b"\xef\xbb\xbf" + v1(rows(2)),
        200,
        forwarded=True,
    ),
    Case(
        "underflowing_float",
        "mlflow",
        records(rows(2, at=1, monthly_income=LIT), "1e-400"),
        200,
        forwarded=True,
    ),
    Case(
        "integer_past_64_bits",
        "v2",
        v2(rows(2, at=1, age=LIT), str(2**70)),
        200,
        forwarded=True,
    ),
    Case(
        "unicode_in_categories",
        "v1",
        v1(
            [
                row(marital_status="\U0001f48d married"),
                row(employment="\u05e2\u05d5\u05d1\u05d3 \u202eemployed"),
                row(purpose="kitchen\u200b\u200d\ufeff"),
                row(purpose="tab\there \\u0000 nul \u0000"),
            ]
        ),
        200,
        forwarded=True,
    ),
    Case(
        "escaped_surrogate_pair",
        "mlflow",
        records(rows(2, at=1, purpose=LIT), '"emoji \\ud83d\\ude00"'),
        200,
        forwarded=True,
    ),
    Case(
        "gzip_body",
        "v1",
        gzip.compress(v1(rows(3))),
        200,
        headers=(("content-encoding", "gzip"),),
        forwarded=True,
    ),
    Case(
        "deflate_body",
        "v2",
        zlib.compress(v2(rows(3))),
        200,
        headers=(("content-encoding", "deflate"),),
        forwarded=True,
    ),
]


@dataclass
class Deployment:
    sidecar: RunningSidecar
    upstream: StubUpstream


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def deployments(profile: Profile) -> AsyncIterator[dict[str, Deployment]]:
    limits = ValidationSettings(max_body_bytes=LIMIT, max_rows=MAX_ROWS, unknown_features="enforce")
    out: dict[str, Deployment] = {}
    async with StubUpstream() as up_v2, StubUpstream() as up_v1, StubUpstream() as up_mlflow:
        ups = {"v2": up_v2, "v1": up_v1, "mlflow": up_mlflow}
        settings = {
            p: Settings(
                upstream=UpstreamSettings(url=up.url, timeout_seconds=2.0),
                validation=limits,
                protocol=p,
            )
            for p, up in ups.items()
        }
        async with (
            run_sidecar(settings["v2"], {"loan": profile}) as sc_v2,
            run_sidecar(settings["v1"], {"loan": profile}) as sc_v1,
            run_sidecar(settings["mlflow"], {"loan": profile}) as sc_mlflow,
        ):
            sidecars = {"v2": sc_v2, "v1": sc_v1, "mlflow": sc_mlflow}
            for p in ups:
                out[p] = Deployment(sidecars[p], ups[p])
            yield out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    content_type: str | None,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[int, str, bytes]:
    hdrs = dict(headers)
    skip: tuple[str, ...] = ()
    if content_type is None:
        skip = ("Content-Type",)
    else:
        hdrs["content-type"] = content_type
    async with http.post(url, data=body, headers=hdrs, skip_auto_headers=skip) as r:
        return r.status, r.headers.get("content-type", ""), await r.read()


def error_of(protocol: str, content_type: str, body: bytes) -> dict[str, Any]:
    assert content_type.startswith("application/json"), (content_type, body[:200])
    if protocol in ("v2", "v1"):  # the protocols' own shape: `error` is the message
        err = protocol_error(body)
        assert err["message"]
        return err
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"type", "message", "details"}, err
    assert isinstance(err["message"], str)
    assert err["message"]
    assert isinstance(err["details"], list)
    return dict(err)


def names_row(err: dict[str, Any], row_index: int) -> bool:
    if any(d.get("row") == row_index for d in err["details"]):
        return True
    return re.search(rf"(\brow {row_index}\b|\[{row_index}\])", err["message"]) is not None


def names_feature(err: dict[str, Any], feature: str) -> bool:
    if any(d.get("feature") == feature for d in err["details"]):
        return True
    return f"'{feature}'" in err["message"] or f".{feature} " in err["message"]


async def assert_still_serves(http: aiohttp.ClientSession, dep: Deployment, protocol: str) -> None:
    dep.upstream.state.requests.clear()
    status, _, _ = await asyncio.wait_for(
        post(http, dep.sidecar.url + PATHS[protocol], GOOD[protocol], JSON_CT), DEADLINE
    )
    assert status == 200
    assert len(dep.upstream.state.requests) == 1


def test_corpus_is_wide() -> None:
    kinds = [c.kind for c in CASES]
    assert len(set(kinds)) == len(kinds)
    rejected = [c for c in CASES if not c.forwarded]
    assert len(rejected) + len(RAW_CASES) >= 40
    assert {c.protocol for c in rejected} == {"v2", "v1", "mlflow"}


@IN_MODULE_LOOP
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.protocol}-{c.kind}")
async def test_hostile_request(
    deployments: dict[str, Deployment], http: aiohttp.ClientSession, case: Case
) -> None:
    dep = deployments[case.protocol]
    dep.upstream.state.requests.clear()
    url = dep.sidecar.url + PATHS[case.protocol]
    status, content_type, body = await asyncio.wait_for(
        post(http, url, case.body, case.content_type, case.headers), DEADLINE
    )
    assert status == case.status, body[:500]
    if case.forwarded:
        (forwarded,) = dep.upstream.state.requests
        coding = dict(case.headers).get("content-encoding")
        if coding is not None:  # the stub's server inflates what it receives
            assert forwarded["headers"]["content-encoding"] == coding
            assert forwarded["body"] == zlib.decompress(case.body, zlib.MAX_WBITS | 32)
        else:
            assert forwarded["body"] == case.body
    else:
        assert 400 <= status < 500
        err = error_of(case.protocol, content_type, body)
        assert err["type"] == case.error_type
        text = (err["message"] + json.dumps(err["details"], ensure_ascii=False)).lower()
        for needle in case.needles:
            assert needle.lower() in text, (needle, err)
        if case.row is not None:
            assert names_row(err, case.row), err
        if case.feature is not None:
            assert names_feature(err, case.feature), err
        assert dep.upstream.state.requests == []
    await assert_still_serves(http, dep, case.protocol)


# --- raw bytes on a plain socket ------------------------------------------------------------


@dataclass(frozen=True)
class RawCase:
    kind: str
    protocol: str
    head: str
    """Request line and headers (without the final blank line); Host is added."""
    body: bytes
    status: int | None
    """None: the sidecar may only close the connection (the client is gone)."""
    json_error: str | None = "decode_error"
    """The error type of a JSON error body; None when the HTTP server answers before the app."""
    needles: tuple[str, ...] = ()
    half_close: bool = False


def _chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


_BIG = v1(rows(2, at=0, purpose="y" * (LIMIT + 10)))

RAW_CASES: list[RawCase] = [
    RawCase(
        "declared_length_over_limit",
        "v2",
        f"POST {PATHS['v2']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\nContent-Length: {LIMIT + 1}",
        b"",
        413,
        "payload_too_large",
        (f"{LIMIT + 1} bytes",),
    ),
    RawCase(
        "chunked_body_over_limit",
        "v1",
        f"POST {PATHS['v1']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\nTransfer-Encoding: chunked",
        _chunked(_BIG, 16 * 1024),
        413,
        "payload_too_large",
        (f"{LIMIT}-byte limit",),
    ),
    RawCase(
        "body_shorter_than_content_length_then_half_close",
        "mlflow",
        f"POST {PATHS['mlflow']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\n"
        f"Content-Length: {len(GOOD['mlflow']) + 100}",
        GOOD["mlflow"],
        None,
        half_close=True,
    ),
    RawCase(
        "chunked_without_last_chunk_then_half_close",
        "v2",
        f"POST {PATHS['v2']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\nTransfer-Encoding: chunked",
        _chunked(GOOD["v2"])[:-5],
        None,
        half_close=True,
    ),
    RawCase(
        "content_length_cuts_the_json",
        "v1",
        f"POST {PATHS['v1']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\n"
        f"Content-Length: {len(GOOD['v1']) - 10}\r\nConnection: close",
        GOOD["v1"],
        400,
        "decode_error",
        ("not valid JSON",),
    ),
    RawCase(
        "bad_chunk_size",
        "mlflow",
        f"POST {PATHS['mlflow']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\nTransfer-Encoding: chunked",
        b"zz\r\n{}\r\n0\r\n\r\n",
        400,
        None,
    ),
    RawCase(
        "invalid_utf8_raw",
        "v2",
        f"POST {PATHS['v2']} HTTP/1.1\r\nContent-Type: {JSON_CT}\r\nContent-Length: 14",
        b'{"inputs": \xc0\xaf}',
        400,
        "decode_error",
        ("not valid UTF-8", "0xc0"),
    ),
]


async def raw_exchange(url: str, case: RawCase) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = f"{case.head}\r\nHost: {host}\r\n\r\n".encode()
        writer.write(head + case.body)
        await writer.drain()
        if case.half_close:
            writer.write_eof()
        return await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP response (by Content-Length), or whatever came before the server closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if match is None:
        return head + await reader.read()
    try:
        return head + await reader.readexactly(int(match.group(1)))
    except asyncio.IncompleteReadError as exc:
        return head + exc.partial


@IN_MODULE_LOOP
@pytest.mark.parametrize("case", RAW_CASES, ids=lambda c: f"{c.protocol}-{c.kind}")
async def test_hostile_raw_request(
    deployments: dict[str, Deployment], http: aiohttp.ClientSession, case: RawCase
) -> None:
    dep = deployments[case.protocol]
    dep.upstream.state.requests.clear()
    disconnects = len(disconnected_lines(dep.sidecar))
    raw = await asyncio.wait_for(raw_exchange(dep.sidecar.url, case), DEADLINE)
    if case.status is None:
        # The client stopped sending: nothing is forwarded and the connection ends; a reply, if
        # any, is a 4xx.
        first_line = raw.split(b"\r\n", 1)[0]
        assert raw == b"" or re.match(rb"HTTP/1\.1 4\d\d ", first_line), raw[:200]
    else:
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith(f"HTTP/1.1 {case.status} "), raw[:300]
        headers = dict(line.lower().split(": ", 1) for line in header_lines)
        if case.json_error is not None:
            err = error_of(case.protocol, headers.get("content-type", ""), body)
            assert err["type"] == case.json_error
            for needle in case.needles:
                assert needle.lower() in err["message"].lower(), (needle, err)
    assert dep.upstream.state.requests == []
    await assert_still_serves(http, dep, case.protocol)
    if case.status is None:  # logged as a client that left, not as a sidecar failure
        assert len(disconnected_lines(dep.sidecar)) == disconnects + 1


def disconnected_lines(sidecar: RunningSidecar) -> list[dict[str, Any]]:
    return [
        line
        for line in sidecar.log_lines()
        if line.get("error") == "client_disconnected" and line["status"] == 499
    ]
