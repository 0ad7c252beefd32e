"""POST /feedback over real HTTP: matching, outcomes, quality, restarts, versions."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from pydantic import SecretStr
from sklearn import metrics as skm

from app.config import AuthSettings, FeedbackSettings, Settings, UpstreamSettings
from app.monitoring.profile import Profile
from tests.support.sidecar import RunningSidecar, run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row, v2_request


def make_settings(url: str, **feedback: Any) -> Settings:
    fb = {"store": "sqlite::memory:", "min_rows": 5, **feedback}
    return Settings(
        upstream=UpstreamSettings(url=url, timeout_seconds=2.0),
        feedback=FeedbackSettings(**fb),
    )


async def predict(
    http: aiohttp.ClientSession,
    sc: RunningSidecar,
    request_id: str,
    rows: int = 1,
    extra: dict[str, Any] | None = None,
) -> None:
    body = v2_request([good_row() for _ in range(rows)], request_id)
    if extra:
        body["inputs"].append(extra)
    async with http.post(
        f"{sc.url}/v2/models/loan/infer", json=body, headers={"x-request-id": request_id}
    ) as r:
        assert r.status == 200, await r.text()
        assert r.headers["x-request-id"] == request_id


async def feedback(
    http: aiohttp.ClientSession,
    sc: RunningSidecar,
    items: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{sc.url}/feedback", json=items, headers=headers or {}) as r:
        return r.status, await r.json()


async def test_outcomes_are_counted_and_explained(profile: Profile) -> None:
    assert profile.prediction is not None
    assert profile.prediction.task == "classification"  # a score in [0, 1] beside a 0/1 target
    settings = make_settings("http://x", task="regression")  # scored as a number here
    async with (
        StubUpstream() as up,
        run_sidecar(
            settings.model_copy(update={"upstream": UpstreamSettings(url=up.url)}),
            {"loan": profile},
        ) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            await predict(http, sc, "r1", rows=3)
            status, doc = await feedback(
                http,
                sc,
                {
                    "feedback": [
                        {"request_id": "r1", "row": 2, "label": 0.5},
                        {"request_id": "r1", "label": 0.25},  # row defaults to 0
                        {"request_id": "r1", "row": 2, "label": 0.5},  # duplicate
                        {"request_id": "never-seen", "label": 1.0},
                        {"request_id": "r1", "row": 9, "label": 1.0},  # no such row
                        {"request_id": "r1", "row": 1},  # no label
                        {"request_id": "r1", "row": 1, "label": "high"},  # not a number
                        {"row": 1, "label": 1.0},  # no address
                        {"request_id": "r1", "row": -1, "label": 1.0},
                        {"request_id": "r1", "label": 1.0, "model": "churn"},
                        "not an object",
                    ]
                },
            )
    assert status == 200
    assert doc["received"] == 11
    assert doc["outcomes"] == {
        "matched": 2,
        "unknown": 2,
        "duplicate": 1,
        "expired": 0,
        "invalid": 6,
    }
    by_index = {d["index"]: d for d in doc["details"]}
    assert set(by_index) == {2, 3, 4, 5, 6, 7, 8, 9, 10}
    assert "already has a label" in by_index[2]["message"]
    assert "'never-seen'" in by_index[3]["message"]
    assert "never served" in by_index[3]["message"]
    assert "row 9" in by_index[4]["message"]
    assert "'label' is missing" in by_index[5]["message"]
    assert "must be a number" in by_index[6]["message"]
    assert "'request_id'" in by_index[7]["message"]
    assert "'row'" in by_index[8]["message"]
    assert "'churn'" in by_index[9]["message"]
    assert by_index[10]["message"] == "feedback[10] must be an object"
    counts = {
        o: sc.sample("infersight_feedback_total", {"model": "loan", "outcome": o})
        for o in ("matched", "unknown", "duplicate", "expired")
    }
    assert counts == {"matched": 2, "unknown": 2, "duplicate": 1, "expired": 0}
    # The invalid item that named an unprofiled model is counted under __other__.
    assert sc.sample("infersight_feedback_total", {"model": "loan", "outcome": "invalid"}) == 5
    assert sc.sample("infersight_feedback_total", {"model": "__other__", "outcome": "invalid"}) == 1
    # Regression scoring: the stub predicts 0.5 for every row.
    assert sc.sample("infersight_feedback_scored_total", {"model": "loan"}) == 2
    assert sc.sample("infersight_feedback_underestimate_total", {"model": "loan"}) == 0
    assert sc.sample("infersight_feedback_overestimate_total", {"model": "loan"}) == 0.25
    assert sc.sample("infersight_feedback_squared_error_total", {"model": "loan"}) == 0.0625


async def test_bad_bodies_are_400_and_limits_413(profile: Profile) -> None:
    async with (
        StubUpstream() as up,
        run_sidecar(make_settings(up.url, max_items=3), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sc.url}/feedback", data=b"{not json") as r:
                assert r.status == 400
                assert (await r.json())["error"]["type"] == "decode_error"
            status, doc = await feedback(http, sc, {"labels": []})
            assert status == 400
            assert '{"feedback"' in doc["error"]["message"]
            status, doc = await feedback(
                http, sc, {"feedback": [{"request_id": "x", "label": 1}] * 4}
            )
            assert status == 413
            assert "limit is 3" in doc["error"]["message"]


async def test_regression_quality_window_matches_sklearn(profile: Profile) -> None:
    rng = np.random.default_rng(0)
    labels = rng.normal(0.5, 0.2, 40).tolist()
    preds = rng.uniform(0, 1, 40).tolist()
    async with (
        StubUpstream() as up,
        run_sidecar(make_settings(up.url, task="regression"), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            for i, p in enumerate(preds):
                up.state.prediction = p
                await predict(http, sc, f"q{i}")
            # Labels arrive later and out of order.
            order = rng.permutation(40).tolist()
            items = [{"request_id": f"q{i}", "label": labels[i]} for i in order]
            status, doc = await feedback(http, sc, {"feedback": items})
            assert status == 200
            assert doc["outcomes"]["matched"] == 40
    q = {
        m: sc.sample("infersight_model_quality", {"model": "loan", "metric": m})
        for m in ("mae", "rmse", "bias")
    }
    assert q["mae"] == pytest.approx(skm.mean_absolute_error(labels, preds))
    assert q["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(labels, preds)))
    assert q["bias"] == pytest.approx(float(np.mean(np.array(preds) - np.array(labels))))
    assert sc.sample("infersight_model_quality_window_rows", {"model": "loan"}) == 40


async def test_probability_quality_from_counters_matches_sklearn(profile: Profile) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, 60), 0, 1)
    settings = make_settings("http://x")  # the profile's task: the probability of class 1
    async with StubUpstream() as up:
        settings = settings.model_copy(update={"upstream": UpstreamSettings(url=up.url)})
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            for i, pi in enumerate(p.tolist()):
                up.state.prediction = pi
                await predict(http, sc, f"c{i}")
            # Labels in several spellings: 1/0, true/false, "1"/"0".
            spell = [lambda v: int(v), lambda v: bool(v), lambda v: str(int(v))]
            items = [
                {"request_id": f"c{i}", "label": spell[i % 3](v)} for i, v in enumerate(y.tolist())
            ]
            status, doc = await feedback(http, sc, {"feedback": items})
            assert status == 200, doc
            assert doc["outcomes"]["matched"] == 60
    pred = (p >= 0.5).astype(int)
    q = lambda m: sc.sample("infersight_model_quality", {"model": "loan", "metric": m})  # noqa: E731
    assert q("accuracy") == pytest.approx(skm.accuracy_score(y, pred))
    assert q("f1") == pytest.approx(skm.f1_score(y, pred))
    assert q("log_loss") == pytest.approx(skm.log_loss(y, p))
    assert q("brier") == pytest.approx(skm.brier_score_loss(y, p))
    assert q("roc_auc") == pytest.approx(skm.roc_auc_score(y, p))
    # The fleet-wide counters give the same numbers in PromQL: sums over the scored count.
    n = sc.sample("infersight_feedback_scored_total", {"model": "loan"})
    assert n == 60
    log_loss_sum = sc.sample("infersight_feedback_log_loss_total", {"model": "loan"})
    assert log_loss_sum is not None
    assert log_loss_sum / n == pytest.approx(skm.log_loss(y, p))
    confusion = {
        (a, b): sc.sample(
            "infersight_feedback_confusion_total", {"model": "loan", "actual": a, "predicted": b}
        )
        for a in ("1", "0")
        for b in ("1", "0")
    }
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert confusion == {("1", "1"): tp, ("0", "1"): fp, ("1", "0"): fn, ("0", "0"): tn}
    rows = [
        sc.sample("infersight_feedback_calibration_rows_total", {"model": "loan", "bin": b})
        for b in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1")
    ]
    assert rows == np.bincount(np.minimum((p * 10).astype(int), 9), minlength=10).tolist()


async def test_business_key_and_feedback_after_restart(profile: Profile, tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'feedback.db'}"
    key_tensor = {
        "name": "application_id",
        "shape": [2],
        "datatype": "BYTES",
        "data": ["app-1", "app-2"],
    }
    async with StubUpstream() as up:
        settings = make_settings(up.url, store=store, key_field="application_id")
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            await predict(http, sc, "k1", rows=2, extra=key_tensor)
            await predict(http, sc, "k2")
        # The sidecar restarts; the labels arrive afterwards.
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            status, doc = await feedback(
                http,
                sc,
                {
                    "feedback": [
                        {"key": "app-2", "label": 1.0},
                        {"request_id": "k2", "label": 0.0},
                        {"key": "app-3", "label": 1.0},
                    ]
                },
            )
    assert status == 200
    assert doc["outcomes"]["matched"] == 2
    assert doc["outcomes"]["unknown"] == 1
    assert "key 'app-3'" in doc["details"][0]["message"]


async def test_feedback_token_and_disabled(profile: Profile) -> None:
    async with StubUpstream() as up:
        settings = make_settings(up.url).model_copy(
            update={"auth": AuthSettings(feedback_token=SecretStr("s3cret"))}
        )
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            body = {"feedback": []}
            status, _ = await feedback(http, sc, body)
            assert status == 401
            status, doc = await feedback(http, sc, body, {"authorization": "Bearer s3cret"})
            assert status == 200
            assert doc["received"] == 0
        off = make_settings(up.url, enabled=False)
        async with run_sidecar(off, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            status, doc = await feedback(http, sc, {"feedback": []})
            assert status == 404
            assert doc["error"]["type"] == "not_enabled"


async def test_version_changes_are_counted_and_mismatch_reported(profile: Profile) -> None:
    assert profile.model.version == "v1"
    async with StubUpstream() as up, run_sidecar(make_settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            await predict(http, sc, "v-a")
            info = lambda v: sc.sample(  # noqa: E731
                "infersight_model_info",
                {"model": "loan", "version": v, "profile_hash": profile.content_hash()},
            )
            assert info("v1") == 1
            assert sc.sample("infersight_profile_mismatch", {"model": "loan"}) == 0
            up.state.model_version = "v2-buggy"
            await predict(http, sc, "v-b")
            await predict(http, sc, "v-c")
            assert sc.sample("infersight_model_version_changes_total", {"model": "loan"}) == 1
            assert info("v2-buggy") == 1
            assert info("v1") is None  # one series per model: the current version
            assert sc.sample("infersight_profile_mismatch", {"model": "loan"}) == 1
            lines = sc.log_lines()
    assert [
        line["model_version"] for line in lines if line.get("event") == "request.completed"
    ] == [
        "v1",
        "v2-buggy",
        "v2-buggy",
    ]


async def test_labels_after_the_ttl_are_expired(profile: Profile) -> None:
    async with (
        StubUpstream() as up,
        run_sidecar(make_settings(up.url, ttl_seconds=0.3), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            await predict(http, sc, "old", rows=2)
            await asyncio.sleep(0.5)
            await predict(http, sc, "new")
            status, doc = await feedback(
                http,
                sc,
                {
                    "feedback": [
                        {"request_id": "old", "row": 0, "label": 1},
                        {"request_id": "old", "row": 1, "label": 0},
                        {"request_id": "new", "label": 1},
                    ]
                },
            )
    assert status == 200
    assert doc["outcomes"]["expired"] == 2
    assert doc["outcomes"]["matched"] == 1
    assert "older than feedback.ttl_seconds" in doc["details"][0]["message"]
    assert sc.sample("infersight_feedback_total", {"model": "loan", "outcome": "expired"}) == 2
