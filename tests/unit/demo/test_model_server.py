"""The demo's V2 model server over real HTTP on loopback: shapes, id echo, 400s, demo knobs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from sklearn.pipeline import Pipeline

from app.demo.data import FEATURES, TARGET, generate, rows
from app.demo.model import (
    BUGGY_VERSION,
    CANDIDATE_VERSION,
    GOOD_VERSION,
    BuggyModel,
    GoodModel,
    accuracy,
    predict,
    train,
    train_candidate,
)
from app.demo.model_server import (
    BackgroundServer,
    ServerState,
    candidate_state,
    create_app,
    demo_state,
    serve,
)
from app.demo.traffic import encode_request


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return train(generate(1500, seed=0))


@pytest.fixture(scope="module")
def running(pipeline: Pipeline) -> Iterator[tuple[ServerState, BackgroundServer]]:
    state = demo_state(pipeline)
    server = serve(state)
    yield state, server
    server.stop()


@pytest.fixture
def state(running: tuple[ServerState, BackgroundServer]) -> Iterator[ServerState]:
    yield running[0]
    running[0].control({"version": GOOD_VERSION, "delay_ms": 0})


@pytest.fixture
def url(running: tuple[ServerState, BackgroundServer], state: ServerState) -> str:
    return running[1].url


def sample_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return rows(generate(n, seed=seed), FEATURES)


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=data, headers={"content-type": "application/json"}) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_tensor_per_feature_answers_v2_shapes_and_echoes_id(url: str) -> None:
    body = encode_request(sample_rows(3), "req-42")
    body["inputs"][1]["shape"] = [3, 1]  # [n, 1] is accepted as well as [n]
    status, doc = await call("POST", f"{url}/v2/models/loan/infer", body)
    assert status == 200
    assert doc["id"] == "req-42"
    assert (doc["model_name"], doc["model_version"]) == ("loan", GOOD_VERSION)
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64"
    assert outputs["predict"]["shape"] == [3, 1]
    assert set(outputs["predict"]["data"]) <= {0, 1}
    assert outputs["predict_proba"]["datatype"] == "FP64"
    assert outputs["predict_proba"]["shape"] == [3]
    assert all(0.0 <= p <= 1.0 for p in outputs["predict_proba"]["data"])


async def test_one_matrix_tensor_in_feature_order_gives_the_same_answer(url: str) -> None:
    batch = sample_rows(4)
    matrix = [[row[f] for f in FEATURES] for row in batch]
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [4, 7], "data": matrix}]}
    status, doc = await call("POST", f"{url}/v2/models/loan/infer", body)
    assert status == 200
    _, per_feature = await call("POST", f"{url}/v2/models/loan/infer", encode_request(batch, "a"))
    assert doc["outputs"] == per_feature["outputs"]
    assert doc["id"]  # generated when the request has none


async def test_missing_values_and_unseen_categories_are_served(url: str) -> None:
    batch = sample_rows(2)
    batch[0]["monthly_income"] = None
    batch[1]["employment"] = "gig-worker"
    status, doc = await call("POST", f"{url}/v2/models/loan/infer", encode_request(batch, "m"))
    assert status == 200
    assert len(doc["outputs"][0]["data"]) == 2


async def test_health_metadata_and_versions(url: str) -> None:
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/loan/ready"):
        status, _ = await call("GET", url + path)
        assert status == 200, path
    status, meta = await call("GET", f"{url}/v2/models/loan")
    assert status == 200
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    body = encode_request(sample_rows(1), "v")
    status, doc = await call("POST", f"{url}/v2/models/loan/versions/{BUGGY_VERSION}/infer", body)
    assert (status, doc["model_version"]) == (200, BUGGY_VERSION)
    assert (await call("POST", f"{url}/v2/models/nope/infer", body))[0] == 404
    assert (await call("POST", f"{url}/v2/models/loan/versions/v9/infer", body))[0] == 404


def _with(body: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    inputs = [dict(t) for t in body["inputs"]]
    inputs[index].update(fields)
    return {**body, "inputs": inputs}


GOOD = encode_request(sample_rows(2), "bad")
BAD_BODIES: dict[str, Any] = {
    "not json": b"{not json",
    "not an object": [1, 2],
    "no inputs": {"inputs": []},
    "shape disagrees with data": _with(GOOD, 0, shape=[3]),
    "unknown datatype": _with(GOOD, 0, datatype="COMPLEX"),
    "value does not fit datatype": _with(GOOD, 0, data=[30, "forty"]),
    "text where a number is needed": _with(GOOD, 0, datatype="BYTES", data=[30, "forty"]),
    "rows disagree": _with(GOOD, 1, shape=[1], data=[1.0]),
    "feature tensor is 2-D": _with(GOOD, 0, shape=[1, 2]),
    "model input absent": {**GOOD, "inputs": GOOD["inputs"][1:]},
    "matrix of the wrong width": {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]
    },
    "unknown output requested": {**GOOD, "outputs": [{"name": "logits"}]},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_requests_get_400_with_a_message(url: str, body: Any) -> None:
    status, doc = await call("POST", f"{url}/v2/models/loan/infer", body)
    assert status == 400
    assert isinstance(doc["error"], str)
    assert doc["error"]


async def test_requested_outputs_are_the_only_ones_returned(url: str) -> None:
    body = {**GOOD, "outputs": [{"name": "predict_proba"}]}
    status, doc = await call("POST", f"{url}/v2/models/loan/infer", body)
    assert status == 200
    assert [o["name"] for o in doc["outputs"]] == ["predict_proba"]


async def test_control_swaps_in_the_buggy_version(url: str, pipeline: Pipeline) -> None:
    batch = sample_rows(5)
    _, good = await call("POST", f"{url}/v2/models/loan/infer", encode_request(batch, "g"))
    status, knobs = await call("POST", f"{url}/demo/control", {"version": BUGGY_VERSION})
    assert (status, knobs["version"]) == (200, BUGGY_VERSION)
    _, bad = await call("POST", f"{url}/v2/models/loan/infer", encode_request(batch, "b"))
    assert bad["model_version"] == BUGGY_VERSION
    good_p, bad_p = good["outputs"][1]["data"], bad["outputs"][1]["data"]
    assert bad_p == pytest.approx([1.0 - p for p in good_p])
    assert (await call("GET", f"{url}/demo/control"))[1]["version"] == BUGGY_VERSION


async def test_control_delay_slows_inference_down(url: str) -> None:
    status, _ = await call("POST", f"{url}/demo/control", {"delay_ms": 200})
    assert status == 200
    started = time.perf_counter()
    status, _ = await call("POST", f"{url}/v2/models/loan/infer", GOOD)
    assert status == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    assert (await call("GET", f"{url}/v2/health/ready"))[0] == 200
    assert time.perf_counter() - started < 0.2  # health checks are never delayed


@pytest.mark.parametrize(
    "knobs", [{"version": "v9"}, {"delay_ms": -1}, {"delay_ms": "slow"}, {"speed": 1}, [1]]
)
async def test_bad_control_gets_400_and_changes_nothing(
    url: str, state: ServerState, knobs: Any
) -> None:
    status, doc = await call("POST", f"{url}/demo/control", knobs)
    assert status == 400
    assert "error" in doc
    assert (state.version, state.delay_ms) == (GOOD_VERSION, 0.0)


def test_buggy_model_inverts_the_score(pipeline: Pipeline) -> None:
    cols = generate(200, seed=3)
    classes, proba = predict(pipeline, cols)
    bad_classes, bad_proba = BuggyModel(pipeline).predict(cols)
    assert bad_proba == pytest.approx([1.0 - p for p in proba])
    assert sum(bad_classes) > len(cols["age"]) / 2 > sum(classes)


def test_busy_port_fails_fast(running: tuple[ServerState, BackgroundServer]) -> None:
    state, server = running
    with pytest.raises(OSError, match="in use"):
        BackgroundServer(create_app(state), port=server.port)


def test_the_buggy_version_is_worse_against_the_true_labels(pipeline: Pipeline) -> None:
    cols = generate(3000, seed=21)
    labels = cols[TARGET]
    good = accuracy(GoodModel(pipeline).predict(cols)[0], labels)
    buggy = accuracy(BuggyModel(pipeline).predict(cols)[0], labels)
    base_rate = sum(labels) / len(labels)
    assert good > 1 - base_rate > 0.7  # better than always predicting "no default"
    assert buggy == pytest.approx(1 - good)  # every class inverted
    assert buggy < 0.3


def test_the_candidate_is_a_sound_model_that_differs_a_little() -> None:
    good, candidate = train(generate(5000, seed=0)), train_candidate(0)
    cols = generate(3000, seed=22)
    good_classes = GoodModel(good).predict(cols)[0]
    cand_classes = GoodModel(candidate).predict(cols)[0]
    agreement = accuracy(cand_classes, good_classes)
    assert 0.9 < agreement < 1.0
    assert abs(accuracy(cand_classes, cols[TARGET]) - accuracy(good_classes, cols[TARGET])) < 0.03


async def test_candidate_server_answers_under_the_same_model_name(pipeline: Pipeline) -> None:
    state = candidate_state(pipeline)
    assert list(state.models) == [CANDIDATE_VERSION]
    server = serve(state)
    try:
        body = encode_request(sample_rows(2), "c")
        status, doc = await call("POST", f"{server.url}/v2/models/loan/infer", body)
        assert (status, doc["model_name"], doc["model_version"]) == (200, "loan", CANDIDATE_VERSION)
        status, _ = await call("POST", f"{server.url}/demo/control", {"version": BUGGY_VERSION})
        assert status == 400
    finally:
        server.stop()
