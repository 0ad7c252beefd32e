"""Smoke tests of the real upstream model servers themselves, called directly (no sidecar).

Each server must answer a 3-row request with the very predictions its model gave for those
rows at training time (``reference.json`` written by train.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.servers.harness import RunningServer, http_request

# First use of a fixture may build its server venv (a few minutes), then train and start it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

V2_DATATYPES = {
    "age": "INT64",
    "monthly_income": "FP64",
    "loan_amount": "FP64",
    "has_mortgage": "BOOL",
}


def three_rows(server: RunningServer) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """Three held-out rows (complete, with both classes when the model predicts both)."""
    ref = server.reference()
    complete = [i for i, row in enumerate(ref["rows"]) if None not in row.values()]
    positives = [i for i in complete if ref["predictions"][i] == 1]
    negatives = [i for i in complete if ref["predictions"][i] == 0]
    picked = (positives[:1] + negatives)[:3]
    if len(picked) < 3:
        picked = complete[:3]
    assert len(picked) == 3
    return (
        ref["features"],
        [ref["rows"][i] for i in picked],
        [ref["predictions"][i] for i in picked],
    )


def assert_predictions(got: Any, expected: list[int]) -> None:
    assert isinstance(got, list)
    assert len(got) == 3
    assert all(p in (0, 1) for p in got), got
    assert got == expected


def test_mlserver_v2_infer(mlserver: RunningServer) -> None:
    features, rows, expected = three_rows(mlserver)
    body = {
        "id": "smoke-mlserver-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": f,
                "shape": [len(rows)],
                "datatype": V2_DATATYPES.get(f, "BYTES"),
                "data": [row[f] for row in rows],
            }
            for f in features
        ],
    }
    status, headers, raw = http_request(
        "POST", f"{mlserver.url}/v2/models/{mlserver.model_name}/infer", body
    )
    assert status == 200, raw
    assert headers["content-type"] == "application/json"
    answer = json.loads(raw)
    assert answer["id"] == "smoke-mlserver-1"
    assert answer["model_name"] == mlserver.model_name
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert "predict" in outputs
    assert outputs["predict"]["datatype"] == "INT64"
    assert_predictions(outputs["predict"]["data"], expected)


def test_kserve_v1_predict(kserve_server: RunningServer) -> None:
    features, rows, expected = three_rows(kserve_server)
    url = f"{kserve_server.url}/v1/models/{kserve_server.model_name}:predict"

    status, _, raw = http_request("POST", url, {"instances": rows})  # DataFrame rows
    assert status == 200, raw
    assert_predictions(json.loads(raw)["predictions"], expected)

    as_lists = [[row[f] for f in features] for row in rows]  # values in training column order
    status, _, raw = http_request("POST", url, {"instances": as_lists})
    assert status == 200, raw
    assert_predictions(json.loads(raw)["predictions"], expected)


@pytest.mark.parametrize("orient", ["dataframe_split", "dataframe_records"])
def test_mlflow_invocations(mlflow_server: RunningServer, orient: str) -> None:
    features, rows, expected = three_rows(mlflow_server)
    payload: Any
    if orient == "dataframe_split":
        payload = {"columns": features, "data": [[row[f] for f in features] for row in rows]}
    else:
        payload = rows
    status, headers, raw = http_request(
        "POST", f"{mlflow_server.url}/invocations", {orient: payload}
    )
    assert status == 200, raw
    assert headers["content-type"] == "application/json"
    assert_predictions(json.loads(raw)["predictions"], expected)
