"""Property-based tests of the three codecs: hostile input only ever raises the project's own
request errors, and rows encoded for a protocol decode back to the same columns."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import DecodeError, RequestError
from app.monitoring.profile import Profile
from app.monitoring.validator import Validator
from app.protocols.codecs import CODECS
from app.protocols.encode import encode_rows

PROTOCOLS = ["v2", "v1", "mlflow"]
FEATURES = ["age", "monthly_income", "marital_status", "has_mortgage"]
VOCABULARY = [
    "inputs",
    "outputs",
    "instances",
    "predictions",
    "dataframe_split",
    "dataframe_records",
    "columns",
    "data",
    "name",
    "shape",
    "datatype",
    "parameters",
    "model_version",
    *FEATURES,
]
DATATYPES = ["FP64", "INT64", "BOOL", "BYTES", "FP32", "UINT8"]

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ROUND_TRIP = settings(PROPERTY, max_examples=40)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(DATATYPES)
    | text
)
keys = st.sampled_from(VOCABULARY) | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)
# Request-shaped documents: a known top-level key over rows, columns or tensors.
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(FEATURES) | text,
        "shape": st.lists(st.integers(-1, 4), max_size=3),
        "datatype": st.sampled_from(DATATYPES),
        "data": st.lists(scalars | st.lists(scalars, max_size=3), max_size=8),
    }
)
shaped = st.one_of(
    st.builds(lambda ts: {"inputs": ts}, st.lists(tensors, max_size=4)),
    st.builds(
        lambda k, rs: {k: rs},
        st.sampled_from(["instances", "inputs", "dataframe_records", "predictions", "outputs"]),
        st.lists(st.dictionaries(keys, scalars, max_size=5) | st.lists(scalars), max_size=5),
    ),
    st.builds(
        lambda cols, data: {"dataframe_split": {"columns": cols, "data": data}},
        st.lists(st.sampled_from(FEATURES) | text, max_size=5),
        st.lists(st.lists(scalars, max_size=5), max_size=5),
    ),
    st.builds(lambda cols: {"inputs": cols}, st.dictionaries(keys, st.lists(scalars, max_size=4))),
)
documents = json_values | shaped
content_types = st.sampled_from(["", "application/json", "text/csv", "text/csv; charset=utf-8"])


def _only_request_errors(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except RequestError:
        return None


@pytest.fixture(scope="module")
def validator(profile: Profile) -> Validator:
    return Validator(profile, unknown_features="enforce")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@PROPERTY
@given(body=st.binary(max_size=300), content_type=content_types)
def test_arbitrary_bytes_raise_only_request_errors(
    protocol: str, body: bytes, content_type: str
) -> None:
    codec = CODECS[protocol]
    _only_request_errors(codec.decode_request, body, FEATURES, content_type)
    _only_request_errors(codec.decode_response, body, None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@PROPERTY
@given(doc=documents, content_type=content_types)
def test_arbitrary_json_raises_only_request_errors_and_validates(
    protocol: str, doc: Any, content_type: str, validator: Validator
) -> None:
    body = json.dumps(doc).encode()  # NaN/Infinity literals and huge integers included
    codec = CODECS[protocol]
    batch = _only_request_errors(codec.decode_request, body, FEATURES, content_type)
    if batch is not None:
        assert all(len(col) == batch.n_rows for col in batch.columns.values())
        report = validator.validate(batch)  # the validator reports bad values, never raises
        assert report.n_rows == batch.n_rows
    _only_request_errors(codec.decode_response, body, "predict", 0)
    _only_request_errors(codec.decode_response, body, None, None)


# --- round trips ------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
exact_ints = st.integers(min_value=-(2**53), max_value=2**53)
clean_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
COLUMN_VALUES = {"int": exact_ints, "float": finite, "str": clean_text, "bool": st.booleans()}


@st.composite
def batches(draw: st.DrawFn, numeric_only: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """Feature names and 1-50 rows; each column holds one type, plus missing values."""
    names = draw(st.lists(clean_text.filter(bool), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(1, 50))
    kinds = ["int", "float"] if numeric_only else list(COLUMN_VALUES)
    columns = {}
    for name in names:
        values = COLUMN_VALUES[draw(st.sampled_from(kinds))]
        columns[name] = draw(st.lists(st.none() | values, min_size=n, max_size=n))
    return names, [{name: columns[name][i] for name in names} for i in range(n)]


def _same(decoded: list[Any], sent: list[Any]) -> bool:
    if len(decoded) != len(sent):
        return False
    for got, want in zip(decoded, sent, strict=True):
        if want is None or got is None or type(want) is bool:
            if got is not want:
                return False
        elif isinstance(want, str):
            if got != want:
                return False
        elif type(got) is bool or got != want:  # 3 and 3.0 (V2 sends ints with gaps as FP64)
            return False
    return True


@pytest.mark.parametrize("protocol", PROTOCOLS)
@ROUND_TRIP
@given(batch=batches())
def test_columns_round_trip(protocol: str, batch: tuple[list[str], list[dict[str, Any]]]) -> None:
    names, rows = batch
    body = encode_rows(protocol, rows, names)
    decoded = CODECS[protocol].decode_request(body, names, "application/json")
    assert decoded.n_rows == len(rows)
    assert set(decoded.columns) == set(names)
    for name in names:
        assert _same(decoded.columns[name], [r[name] for r in rows]), name


@pytest.mark.parametrize("protocol", PROTOCOLS)
@ROUND_TRIP
@given(batch=batches(numeric_only=True))
def test_matrix_round_trip(protocol: str, batch: tuple[list[str], list[dict[str, Any]]]) -> None:
    names, rows = batch
    body = encode_rows(protocol, rows, names, request_format="matrix")
    decoded = CODECS[protocol].decode_request(body, names, "")
    assert decoded.n_rows == len(rows)
    for name in names:
        assert _same(decoded.columns[name], [r[name] for r in rows]), name


@ROUND_TRIP
@given(
    batch=batches(),
    which=st.integers(0, 5),
    row=st.integers(0, 49),
    spacing=st.sampled_from(["", " ", "\n", "\t ", "\r\n  "]),
)
def test_a_repeated_key_in_a_row_is_always_refused(
    batch: tuple[list[str], list[dict[str, Any]]], which: int, row: int, spacing: str
) -> None:
    """Whatever the spacing around `:`, a second value for one key never slips through."""
    names, rows = batch
    name = names[which % len(names)]
    at = row % len(rows)
    texts = [orjson.dumps(r).decode() for r in rows]
    key = json.dumps(name)
    texts[at] = "{" + key + spacing + ":" + spacing + '"decoy",' + texts[at][1:]
    body = ('{"instances": [' + ", ".join(texts) + "]}").encode()
    with pytest.raises(DecodeError, match="more than once") as info:
        CODECS["v1"].decode_request(body, names, "")
    assert f"instances[{at}]" in info.value.message
