"""The sidecar in front of real model servers on loopback: MLServer (V2), kserve (V1), MLflow.

Each test builds the reference profile the way a user would: training data plus the model's
own predictions on it (obtained from the running server), then sends traffic directly and
through the sidecar and compares.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import aiohttp
import pytest

from app.config import Settings, UpstreamSettings
from app.demo.data import FEATURES, generate
from app.monitoring.profile import ModelInfo, Profile
from app.monitoring.profile_builder import build_profile
from tests.conftest import DTYPES
from tests.integration.servers.harness import RunningServer
from tests.support.errors import protocol_error
from tests.support.sidecar import RunningSidecar, parse_metrics, run_sidecar

pytestmark = pytest.mark.integration

V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}


def v2_body(cols: dict[str, list[Any]], request_id: str) -> bytes:
    n = len(cols["age"])
    return json.dumps(
        {
            "id": request_id,
            "parameters": {"content_type": "pd"},
            "inputs": [
                {
                    "name": f,
                    "shape": [n],
                    "datatype": V2_TYPES.get(f, "BYTES"),
                    "data": cols[f],
                }
                for f in FEATURES
            ],
        }
    ).encode()


def subset(cols: dict[str, list[Any]], start: int, stop: int) -> dict[str, list[Any]]:
    return {k: v[start:stop] for k, v in cols.items()}


def without_nulls(cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
    # MLflow's schema enforcement rejects nulls in a double column; fill like a client would.
    out = dict(cols)
    out["monthly_income"] = [3000.0 if v is None else v for v in cols["monthly_income"]]
    return out


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=body, headers={"content-type": content_type}) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


def profile_from_predictions(
    train: dict[str, list[Any]], predictions: list[Any], output_name: str, name: str = "loan"
) -> Profile:
    cols = {f: train[f] for f in FEATURES}
    cols["default"] = train["default"]
    cols["predicted"] = predictions
    dtypes = {**DTYPES, "predicted": "int64"}
    profile, report = build_profile(
        cols,
        dtypes,
        target="default",
        prediction="predicted",
        output_name=output_name,
        model=ModelInfo(name=name, version="v1"),
        data_hash="sha256:integration",
    )
    assert report.warnings == []
    return profile


def metric(sc: RunningSidecar, name: str, **labels: str) -> float:
    value = sc.sample(name, labels)
    assert value is not None, (name, labels)
    return value


async def test_mlserver_v2_byte_identical_counters_and_logs(mlserver: RunningServer) -> None:
    train = generate(400, seed=11)  # MLServer's pandas codec takes JSON nulls as NaN
    infer = f"{mlserver.url}/v2/models/loan/infer"
    async with aiohttp.ClientSession() as http:
        status, _, body = await post(http, infer, v2_body(train, "profile"))
        assert status == 200, body
        outputs = json.loads(body)["outputs"]
        predicted = next(o for o in outputs if o["name"] == "predict")["data"]
    profile = profile_from_predictions(train, predicted, "predict")
    assert profile.prediction is not None
    assert profile.prediction.distribution.kind == "categorical"

    settings = Settings(upstream=UpstreamSettings(url=mlserver.url, timeout_seconds=10))
    traffic = generate(60, seed=12)
    async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
        sent_rows = 0
        classes: Counter[str] = Counter()
        for i, size in enumerate([1, 2, 5, 32, 20]):
            part = subset(traffic, sent_rows, sent_rows + size)
            body = v2_body(part, f"req-{i}")
            direct = await post(http, infer, body)
            via = await post(http, f"{sc.url}/v2/models/loan/infer", body)
            assert via[0] == direct[0] == 200
            assert via[2] == direct[2], "body through the sidecar differs from MLServer's"
            assert via[1]["content-type"] == direct[1]["content-type"]
            out = next(o for o in json.loads(via[2])["outputs"] if o["name"] == "predict")
            classes.update(str(c) for c in out["data"])
            sent_rows += size

        # An enforced violation: 422 naming row, feature, kind and value; MLServer never sees it.
        bad = subset(traffic, 0, 3)
        bad["age"] = [30, "forty", 50]
        status, _, body = await post(http, f"{sc.url}/v2/models/loan/infer", v2_body(bad, "bad"))
        assert status == 422
        detail = protocol_error(body)["details"][0]
        assert detail["row"] == 1
        assert detail["feature"] == "age"
        assert detail["kind"] == "wrong_type"
        assert detail["value"] == "forty"

        # The upstream's own errors pass through unchanged.
        direct = await post(http, f"{mlserver.url}/v2/models/nosuchmodel/infer", v2_body(bad, "x"))
        via = await post(http, f"{sc.url}/v2/models/nosuchmodel/infer", v2_body(bad, "x"))
        assert direct[0] >= 400
        assert (via[0], via[2]) == (direct[0], direct[2])

        # Passthrough of health and metadata.
        async with http.get(f"{sc.url}/v2/models/loan/ready") as r:
            assert r.status == 200
        async with http.get(f"{sc.url}/readyz") as r:
            assert r.status == 200

        async with http.get(f"{sc.url}/metrics") as r:
            m = parse_metrics(await r.text())
        lines = sc.log_lines()

    ok = (("model", "loan"), ("protocol", "v2"), ("status", "2xx"))
    assert m[("infersight_requests_total", ok)] == 5
    assert (
        m[("infersight_requests_total", (("model", "loan"), ("protocol", "v2"), ("status", "4xx")))]
        == 1
    )
    assert m[("infersight_rows_total", (("model", "loan"),))] == sent_rows + 3
    assert (
        m[("infersight_rejected_requests_total", (("model", "loan"), ("reason", "enforce")))] == 1
    )
    assert m[("infersight_rejected_rows_total", (("model", "loan"),))] == 3
    wrong = (("feature", "age"), ("kind", "wrong_type"), ("model", "loan"))
    assert m[("infersight_validation_violations_total", wrong)] == 1
    for cls, n in classes.items():
        key = (("class", cls), ("model", "loan"), ("output", "predict"))
        assert m[("infersight_prediction_class_total", key)] == n
    bins = sum(
        v for (name, lab), v in m.items()
        if name == "infersight_feature_bin_total" and ("feature", "employment") in lab
    )  # fmt: skip
    assert bins == sent_rows + 3
    assert (
        m[
            (
                "infersight_requests_total",
                (("model", "__other__"), ("protocol", "v2"), ("status", "4xx")),
            )
        ]
        == 1
    )

    assert len(lines) == 7
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == 7  # sidecar-generated ids for requests without x-request-id are unique
    assert [line["status"] for line in lines] == [200] * 5 + [422, direct[0]]
    assert [line["n_rows"] for line in lines[:5]] == [1, 2, 5, 32, 20]
    assert all(line["model_version"] == "v1" for line in lines[:5])


async def test_kserve_v1_instances(kserve_server: RunningServer) -> None:
    train = generate(300, seed=21)
    rows = [{f: train[f][i] for f in FEATURES} for i in range(300)]
    predict = f"{kserve_server.url}/v1/models/loan:predict"
    async with aiohttp.ClientSession() as http:
        status, _, body = await post(http, predict, json.dumps({"instances": rows}).encode())
        assert status == 200, body
        predicted = json.loads(body)["predictions"]
    profile = profile_from_predictions(train, predicted, "predictions")
    settings = Settings(
        protocol="v1", upstream=UpstreamSettings(url=kserve_server.url, timeout_seconds=10)
    )
    async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
        for size in (1, 7, 16):
            body = json.dumps({"instances": rows[:size]}).encode()
            direct = await post(http, predict, body)
            via = await post(http, f"{sc.url}/v1/models/loan:predict", body)
            assert via[0] == direct[0] == 200
            assert json.loads(via[2]) == json.loads(direct[2])
        bad = json.dumps({"instances": [{**rows[0], "age": None}]}).encode()
        status, _, body = await post(http, f"{sc.url}/v1/models/loan:predict", bad)
        assert status == 422
        assert protocol_error(body)["details"][0]["kind"] == "missing"
        async with http.get(f"{sc.url}/v1/models/loan") as r:
            assert r.status == 200
        lines = sc.log_lines()
    assert metric(sc, "infersight_rows_total", model="loan") == 25
    assert metric(sc, "infersight_requests_total", model="loan", protocol="v1", status="2xx") == 3
    total = sum(
        metric(
            sc,
            "infersight_prediction_class_total",
            model="loan",
            output="predictions",
            **{"class": c},
        )
        for c in ("0", "1")
    )
    assert total == 24
    assert [line["status"] for line in lines] == [200, 200, 200, 422]


async def test_mlflow_invocations_formats(mlflow_server: RunningServer) -> None:
    train = without_nulls(generate(300, seed=31))
    invocations = f"{mlflow_server.url}/invocations"

    def split(cols: dict[str, list[Any]], n: int) -> bytes:
        data = [[cols[f][i] for f in FEATURES] for i in range(n)]
        return json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}}).encode()

    async with aiohttp.ClientSession() as http:
        status, _, body = await post(http, invocations, split(train, 300))
        assert status == 200, body
        predicted = json.loads(body)["predictions"]
    profile = profile_from_predictions(train, predicted, "predictions")
    settings = Settings(
        protocol="mlflow", upstream=UpstreamSettings(url=mlflow_server.url, timeout_seconds=20)
    )
    records = json.dumps(
        {"dataframe_records": [{f: train[f][i] for f in FEATURES} for i in range(4)]}
    ).encode()
    async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
        for body in (split(train, 5), records):
            direct = await post(http, invocations, body)
            via = await post(http, f"{sc.url}/invocations", body)
            assert via[0] == direct[0] == 200
            assert json.loads(via[2]) == json.loads(direct[2])
        status, _, body = await post(http, f"{sc.url}/invocations", b'{"dataframe_split": 3}')
        assert status == 400
        async with http.get(f"{sc.url}/ping") as r:
            assert r.status == 200
    assert metric(sc, "infersight_rows_total", model="loan") == 9
    assert metric(sc, "infersight_rejected_requests_total", model="loan", reason="decode") == 1
