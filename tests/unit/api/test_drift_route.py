"""Drift cycles in the worker process, seen through the sidecar: verdicts in /monitoring/drift
and /metrics, failures counted, and the request path unaffected by a slow cycle."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from app.config import DriftSettings, Settings, UpstreamSettings
from app.demo.data import FEATURES, generate
from app.monitoring.profile import Profile
from tests.support.sidecar import run_sidecar
from tests.support.slow_cycle import BUSY_SECONDS, busy_cycle
from tests.support.stub_upstream import StubUpstream

TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}


def body(cols: dict[str, list[Any]]) -> bytes:
    n = len(cols["age"])
    return json.dumps(
        {
            "inputs": [
                {"name": f, "shape": [n], "datatype": TYPES.get(f, "BYTES"), "data": cols[f]}
                for f in FEATURES
            ]
        }
    ).encode()


def drift_settings(url: str, **drift: Any) -> Settings:
    return Settings(
        upstream=UpstreamSettings(url=url),
        drift=DriftSettings(interval_seconds=3600, window_rows=2000, min_rows=300, **drift),
    )


async def send(http: aiohttp.ClientSession, url: str, cols: dict[str, list[Any]]) -> None:
    async with http.post(url, data=body(cols), headers={"content-type": "application/json"}) as r:
        assert r.status == 200, await r.text()


async def test_shifted_feature_drifts_and_untouched_ones_do_not(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(drift_settings(up.url), {"loan": profile}) as sc:
        url = f"{sc.url}/v2/models/loan/infer"
        cols = generate(1000, seed=77)
        cols["age"] = [a + 15 for a in cols["age"]]  # covariate shift on one feature
        async with aiohttp.ClientSession() as http:
            for i in range(0, 1000, 100):
                await send(http, url, {k: v[i : i + 100] for k, v in cols.items()})
            assert await sc.app.state.infersight.drift.run_cycle()
            async with http.get(f"{sc.url}/monitoring/drift") as r:
                report = await r.json()
            async with http.get(f"{sc.url}/metrics") as r:
                metrics = await r.text()
    loan = report["models"]["loan"]
    verdicts = {f["feature"]: f["drift"] for f in loan["features"]}
    assert verdicts["age"] is True
    assert verdicts["employment"] is False
    assert verdicts["marital_status"] is False
    age = next(f for f in loan["features"] if f["feature"] == "age")
    assert age["n_rows"] == 1000
    assert any(t["decides"] for t in age["tests"])
    assert report["cycles"] == 1
    assert 'infersight_drift_detected{feature="age",model="loan"} 1.0' in metrics
    assert 'infersight_drift_detected{feature="employment",model="loan"} 0.0' in metrics
    assert 'infersight_drift_window_rows{feature="age",model="loan"} 1000.0' in metrics
    assert "infersight_drift_cycle_seconds_count 1.0" in metrics
    # The stub model answers 0.5 for every row: the prediction window says so.
    assert 'infersight_prediction_window{model="loan",output="predict",stat="mean"} 0.5' in metrics
    assert 'infersight_prediction_window{model="loan",output="predict",stat="std"} 0.0' in metrics
    assert loan["prediction_window"]["max"] == 0.5


async def test_a_slow_cycle_holding_the_gil_does_not_slow_requests(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(drift_settings(up.url), {"loan": profile}) as sc:
        drift = sc.app.state.infersight.drift
        drift._cycle = busy_cycle
        assert await drift.run_cycle()  # warm: the worker process is up and scipy imported
        url = f"{sc.url}/v2/models/loan/infer"
        row = {k: v[:1] for k, v in generate(1, seed=5).items()}
        async with aiohttp.ClientSession() as http:
            cycle = asyncio.create_task(drift.run_cycle())
            started = time.perf_counter()
            latencies = []
            while not cycle.done():
                t0 = time.perf_counter()
                await send(http, url, row)
                latencies.append(time.perf_counter() - t0)
            assert await cycle
            took = time.perf_counter() - started
    assert took >= BUSY_SECONDS
    # Stated bound: while a 1.5 s cycle holds a GIL, requests still answer within 250 ms each
    # (in-process, a cycle like this would stall every request for the full 1.5 s).
    assert max(latencies) < 0.25, max(latencies)
    assert len(latencies) >= 10


def failing_cycle(snapshots: list[Any]) -> list[Any]:
    raise RuntimeError("drift cycle exploded")


async def test_failing_and_timed_out_cycles_are_counted(profile: Profile) -> None:
    settings = drift_settings("http://127.0.0.1:9", cycle_timeout_seconds=0.5)
    async with run_sidecar(settings, {"loan": profile}) as sc:
        drift = sc.app.state.infersight.drift
        drift._cycle = failing_cycle
        assert not await drift.run_cycle()
        drift._cycle = busy_cycle  # longer than the 0.5 s timeout: abandoned, worker replaced
        assert not await drift.run_cycle()
        assert sc.sample("infersight_drift_cycle_errors_total") == 2
        drift.timeout = 30
        from app.monitoring.drift_scheduler import run_cycle

        drift._cycle = run_cycle
        assert await drift.run_cycle()  # the next cycle works again
        async with aiohttp.ClientSession() as http, http.get(f"{sc.url}/healthz") as r:
            assert r.status == 200
