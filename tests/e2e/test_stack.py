"""End to end: model server → sidecar → real Prometheus (project rules) → real Alertmanager →
webhook; then every Grafana panel query against that Prometheus."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from app.config import (
    DriftSettings,
    FeedbackSettings,
    ParitySettings,
    Settings,
    ShadowSettings,
    UpstreamSettings,
)
from app.demo.data import FEATURES, generate
from app.monitoring.profile import Profile
from tests.conftest import loan_profile
from tests.e2e.stack import ROOT, Process, alertmanager, alerts, prometheus, query
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream, free_port

pytestmark = pytest.mark.e2e

TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}
UNTOUCHED = {"marital_status", "loan_amount", "has_mortgage", "purpose"}


def drifted_rows(n: int, seed: int) -> dict[str, list[Any]]:
    """Traffic where age shifts, employment gets an unseen value and income goes missing."""
    rng = random.Random(seed)
    cols = generate(n, seed=seed)
    cols["age"] = [a + 15 for a in cols["age"]]
    cols["employment"] = ["gig-worker" if rng.random() < 0.4 else e for e in cols["employment"]]
    cols["monthly_income"] = [None if rng.random() < 0.6 else v for v in cols["monthly_income"]]
    return cols


def v2_body(cols: dict[str, list[Any]]) -> bytes:
    n = len(cols["age"])
    return json.dumps(
        {
            "inputs": [
                {"name": f, "shape": [n], "datatype": TYPES.get(f, "BYTES"), "data": cols[f]}
                for f in FEATURES
            ]
        }
    ).encode()


class Webhook:
    """Alertmanager's receiver, served by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.received: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Webhook:
        async def receive(request: web.Request) -> web.Response:
            self.received.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/alerts", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def firing(self) -> set[str]:
        return {
            a["labels"]["alertname"]
            for msg in self.received
            for a in msg.get("alerts", [])
            if a.get("status") == "firing"
        }


def alert_features(prom: Process, name: str) -> set[str]:
    return {
        a["labels"].get("feature", "")
        for a in alerts(prom)
        if a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")
    }


async def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def recording_rules() -> list[str]:
    names = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.extend(r["record"] for r in group["rules"] if "record" in r)
    return names


async def test_alerts_fire_for_the_drifted_features_and_panels_have_data(tmp_path: Path) -> None:
    # "loan": a probability (the profile's task); "loan_reg": the same scored as a regression.
    # Golden rows expect the reference scores; the stub answers 0.5: parity mismatches.
    profile: Profile = loan_profile(n=5000, seed=0, golden_rows=10)
    assert profile.prediction is not None
    regression = profile.model_copy(
        update={"prediction": profile.prediction.model_copy(update={"task": "regression"})}
    )
    async with StubUpstream() as up, StubUpstream() as shadow, Webhook() as hook:
        shadow.state.prediction = 0.4  # the candidate predicts the other class
        settings = Settings(
            upstream=UpstreamSettings(url=up.url, timeout_seconds=5),
            drift=DriftSettings(interval_seconds=2, window_rows=3000, min_rows=300),
            feedback=FeedbackSettings(
                store=f"sqlite:{tmp_path / 'feedback.db'}",
                min_rows=10,
                thresholds={"accuracy": 0.9, "mae": 0.3},
            ),
            shadow=ShadowSettings(url=shadow.url, sample_rate=0.5),
            parity=ParitySettings(interval_seconds=1),
        )
        profiles = {"loan": profile, "loan_reg": regression}
        async with run_sidecar(settings, profiles) as sc:
            target = sc.url.removeprefix("http://")
            with (
                alertmanager(tmp_path / "am", hook.url) as am,
                prometheus(tmp_path / "prom", target, am.url.removeprefix("http://")) as prom,
            ):
                async with aiohttp.ClientSession() as http:
                    await send_traffic(http, sc.url, up)
                    stop = asyncio.Event()
                    sender = asyncio.create_task(keep_sending(http, sc.url, stop))
                    try:
                        await assert_stack(prom, hook)
                        await assert_ml_test_score(sc.url, prom)
                    finally:
                        stop.set()
                        await sender


async def send_traffic(http: aiohttp.ClientSession, base: str, up: StubUpstream) -> None:
    """Drifted traffic, a NaN answer, a version change, and late labels for what was served."""
    headers = {"content-type": "application/json"}
    labels = []
    for i in range(30):
        rows = drifted_rows(100, i)
        model = "loan_reg" if i % 5 == 4 else "loan"
        rid = f"e2e-{i}"
        async with http.post(
            f"{base}/v2/models/{model}/infer",
            data=v2_body(rows),
            headers={**headers, "x-request-id": rid},
        ) as r:
            assert r.status == 200
        labels += [
            {"model": model, "request_id": rid, "row": j, "label": float(y)}
            for j, y in enumerate(rows["default"])
        ]
        if i == 20:
            up.state.model_version = "v2"  # a new model version is deployed
        await asyncio.sleep(0.1)
    up.state.prediction = float("nan")  # the model starts answering NaN
    async with http.post(
        f"{base}/v2/models/loan/infer", data=v2_body(drifted_rows(5, 99)), headers=headers
    ) as r:
        assert r.status == 200
    up.state.prediction = 0.5
    async with http.post(f"{base}/feedback", json={"feedback": labels}) as r:
        doc = await r.json()
        assert doc["outcomes"]["matched"] == len(labels), doc


async def keep_sending(http: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> None:
    """Keep traffic and labels flowing while rules evaluate (rates need fresh samples)."""
    headers = {"content-type": "application/json"}
    j = 100
    while not stop.is_set():
        labels = []
        for model in ("loan", "loan_reg"):
            rows = drifted_rows(50, j)
            rid = f"keep-{model}-{j}"
            async with http.post(
                f"{base}/v2/models/{model}/infer",
                data=v2_body(rows),
                headers={**headers, "x-request-id": rid},
            ):
                pass
            labels += [
                {"model": model, "request_id": rid, "row": k, "label": float(y)}
                for k, y in enumerate(rows["default"][:10])
            ]
        async with http.post(f"{base}/feedback", json={"feedback": labels}):
            pass
        j += 1
        await asyncio.sleep(0.2)


async def assert_ml_test_score(sidecar: str, prom: Process) -> None:
    """`infersight ml-test-score` against the sidecar and the real Prometheus's loaded rules."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "ml-test-score", "--sidecar", sidecar,
        "--prometheus", prom.url, "--json",
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["prometheus_checked"]
    by_id = {m["monitor"]: m for m in result["monitors"]}
    for monitor in by_id.values():
        assert monitor["alerts_missing"] == [], monitor  # the project's rules are all loaded
        assert monitor["points"] == (1.0 if monitor["automated"] else 0.0), monitor
    assert by_id[1]["automated"]
    assert by_id[1]["state"] == "alerting"
    assert by_id[3]["automated"]
    assert by_id[3]["state"] == "alerting"
    assert by_id[5]["state"] == "alerting"  # the NaN answer
    assert by_id[7]["automated"]
    assert result["score"] == sum(1 for m in by_id.values() if m["automated"]) >= 6


def diagnose(prom: Process) -> dict[str, dict[str, float]]:
    """Fleet PSI, its critical value, floor and row count per feature (for failure messages)."""
    out: dict[str, dict[str, float]] = {}
    for name in (
        "model_feature:infersight_feature_psi:1h",
        "model_feature:infersight_feature_psi_critical:1h",
        "model_feature:infersight_feature_psi_floor:min",
        "model_feature:infersight_feature_values:increase1h",
    ):
        for r in query(prom, name)["result"]:
            out.setdefault(r["metric"]["feature"], {})[name.split(":")[1]] = float(r["value"][1])
    return out


async def assert_stack(prom: Process, hook: Webhook) -> None:
    drift = await wait_for(
        lambda: alert_features(prom, "InferSightFeatureDrift"), 90, "feature drift alerts"
    )
    assert "age" in drift
    assert not drift & UNTOUCHED, (drift, diagnose(prom))
    missing = await wait_for(
        lambda: alert_features(prom, "InferSightMissingValuesSpike"), 60, "missing values alert"
    )
    assert missing == {"monthly_income"}
    unseen = await wait_for(
        lambda: alert_features(prom, "InferSightUnseenCategories"), 60, "unseen categories alert"
    )
    assert unseen == {"employment"}
    await wait_for(
        lambda: "InferSightNonFinitePredictions" in hook.firing(), 60, "webhook delivery"
    )
    lifecycle_alerts = {"InferSightParityMismatch", "InferSightModelVersionChanged"}
    try:
        await wait_for(
            lambda: lifecycle_alerts <= hook.firing(), 60, "parity and version-change alerts"
        )
    except AssertionError:
        states = {(a["labels"]["alertname"], a["state"]) for a in alerts(prom)}
        seen = {
            name: [(r["metric"], r["value"][1]) for r in query(prom, name)["result"]]
            for name in ("infersight_model_version_changes_total", "infersight_model_info")
        }
        raise AssertionError(
            f"webhook got {hook.firing()}; Prometheus has {states}; {seen}"
        ) from None

    def empty_rules() -> list[str]:
        return [name for name in recording_rules() if not query(prom, name)["result"]]

    try:  # the late labels need two evaluations of the quality rules after their arrival
        await wait_for(lambda: not empty_rules(), 30, "every recording rule to have data")
    except AssertionError:
        raise AssertionError(f"recording rules without data: {empty_rules()}") from None

    from tests.support.grafana_queries import panel_queries, substitute

    variables = {"model": "loan", "feature": "age|employment|monthly_income"}
    no_data = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for q in panel_queries(dashboard):
            if q.datasource != "prometheus":
                continue
            result = query(prom, substitute(q.expr, variables, rate_interval="1m"))["result"]
            if not result and q.expects_data:
                no_data.append(f"{q.dashboard} / {q.panel}: {q.expr}")
    assert not no_data, "panels without data:\n" + "\n".join(no_data)
