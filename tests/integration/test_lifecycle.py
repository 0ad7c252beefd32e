"""The model lifecycle with real processes on loopback: MLServer serving model v1, then a rolling
deploy to a different model v2 behind the same address; the sidecar as an `infersight serve`
process that is restarted between predictions and their (late, out-of-order) labels.

Checks: the version change is seen (counter, info series, profile mismatch, ML Test Score);
parity probes pass on v1 and catch v2; feedback survives the restart (SQLite file store) and
the quality the sidecar reports equals scikit-learn's on the same labels.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sklearn import metrics as skm

from app.cli import main
from app.demo.data import FEATURES, generate, write_csv
from tests.integration.servers.harness import RunningServer
from tests.integration.test_parity import served_outputs
from tests.support.sidecar import parse_metrics
from tests.support.sidecar_process import SidecarProcess
from tests.support.tcp_switch import TcpSwitch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}
OUTPUT = "predict_proba"


def infer_body(cols: dict[str, list[Any]], start: int, stop: int) -> dict[str, Any]:
    n = stop - start
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": f,
                "shape": [n],
                "datatype": V2_TYPES.get(f, "BYTES"),
                "data": cols[f][start:stop],
            }
            for f in FEATURES
        ],
        "outputs": [{"name": OUTPUT}],
    }


async def build_profile_file(server: RunningServer, tmp_path: Path) -> Path:
    train = generate(600, seed=51)
    train["p"] = [row[-1] for row in await served_outputs(server, train, OUTPUT)]
    csv = tmp_path / "train.csv"
    write_csv(train, str(csv))
    out = tmp_path / "profile.json"
    code = main([
        "profile", "build", str(csv), "--target", "default", "--prediction", "p",
        "--output-name", OUTPUT, "--model-name", "loan", "--model-version", "v1",
        "--trained-at", "2026-11-20T00:00:00Z", "--golden-rows", "20", "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    return out


async def get_metrics(http: aiohttp.ClientSession, url: str) -> dict[Any, float]:
    async with http.get(f"{url}/metrics") as r:
        return parse_metrics(await r.text())


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200
        return await r.json()


async def wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {last}")


async def test_version_switch_parity_and_feedback_across_a_restart(
    mlserver: RunningServer, mlserver_swapped: RunningServer, tmp_path: Path
) -> None:
    profile = await build_profile_file(mlserver, tmp_path)
    traffic = generate(240, seed=52)
    labels = traffic["default"]
    async with TcpSwitch(("127.0.0.1", mlserver.port)) as switch:
        config = tmp_path / "infersight.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "protocol": "v2",
                    "profiles": [str(profile)],
                    "upstream": {"url": switch.url, "timeout_seconds": 10},
                    "feedback": {
                        "store": f"sqlite:{tmp_path / 'feedback.db'}",
                        "min_rows": 10,
                        "thresholds": {"accuracy": 0.6},
                    },
                    "parity": {"interval_seconds": 1},
                    "lifecycle": {"metadata_interval_seconds": 1},
                    "drift": {"enabled": False},
                    "logging": {"sink": str(tmp_path / "requests.log")},
                }
            )
        )
        sidecar = SidecarProcess(config, tmp_path / "sidecar.log").start()
        try:
            await run_scenario(sidecar, switch, mlserver_swapped, traffic, labels)
        except BaseException:
            print(sidecar.tail())
            raise
        finally:
            if sidecar.proc is not None and sidecar.proc.poll() is None:
                sidecar.stop()


async def run_scenario(
    sidecar: SidecarProcess,
    switch: TcpSwitch,
    swapped: RunningServer,
    traffic: dict[str, list[Any]],
    labels: list[Any],
) -> None:
    url = sidecar.url
    probabilities: dict[tuple[str, int], float] = {}
    async with aiohttp.ClientSession() as http:
        # 1. Model v1 serves 60 requests of 4 rows.
        for i in range(60):
            rid = f"req-{i}"
            async with http.post(
                f"{url}/v2/models/loan/infer",
                json=infer_body(traffic, 4 * i, 4 * i + 4),
                headers={"x-request-id": rid},
            ) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-request-id"] == rid
                doc = await r.json()
            assert doc["model_version"] == "v1"
            (out,) = doc["outputs"]
            for row in range(4):
                probabilities[(rid, row)] = out["data"][row * 2 + 1]

        async def parity_ok() -> bool:
            m = await get_metrics(http, url)
            return (
                m.get(("infersight_parity_probes_total", (("model", "loan"), ("outcome", "ok"))), 0)
                > 0
            )

        await wait_until(parity_ok, 30, "a passing parity probe on v1")
        m = await get_metrics(http, url)
        info = (
            "infersight_model_info",
            (("model", "loan"), ("profile_hash", ""), ("version", "v1")),
        )
        assert any(k[0] == info[0] and ("version", "v1") in k[1] for k in m)
        assert m[("infersight_model_version_changes_total", (("model", "loan"),))] == 0
        assert m[("infersight_profile_mismatch", (("model", "loan"),))] == 0

        # 2. Labels for the first 30 requests arrive, shuffled; then the sidecar restarts.
        first = [(f"req-{i}", row) for i in range(30) for row in range(4)]
        random.Random(1).shuffle(first)
        items = [
            {"request_id": rid, "row": row, "label": labels[int(rid[4:]) * 4 + row]}
            for rid, row in first
        ]
        async with http.post(f"{url}/feedback", json={"feedback": items}) as r:
            doc = await r.json()
        assert doc["outcomes"]["matched"] == 120, doc

    # A graceful stop: uvicorn finishes, the lifespan closes the store, then re-raises SIGTERM.
    assert sidecar.stop() in (0, -15)
    assert '"sidecar.stopped"' in sidecar.log_path.read_text()
    sidecar.start()

    async with aiohttp.ClientSession() as http:
        # 3. After the restart: the other 30 requests' labels (reversed), a repeat, and ids the
        #    sidecar never saw.
        second = [(f"req-{i}", row) for i in range(30, 60) for row in range(4)][::-1]
        items = [
            {"request_id": rid, "row": row, "label": labels[int(rid[4:]) * 4 + row]}
            for rid, row in second
        ]
        items += [{"request_id": "req-3", "row": 1, "label": 0}, {"request_id": "nope", "label": 1}]
        async with http.post(f"{url}/feedback", json={"feedback": items}) as r:
            doc = await r.json()
        assert doc["outcomes"] == {
            "matched": 120,
            "unknown": 1,
            "duplicate": 1,
            "expired": 0,
            "invalid": 0,
        }

        m = await get_metrics(http, url)
        y = [int(labels[int(rid[4:]) * 4 + row]) for rid, row in second]
        p = [probabilities[(rid, row)] for rid, row in second]
        pred = [int(x >= 0.5) for x in p]

        def q(metric: str) -> float:
            return m[("infersight_model_quality", (("metric", metric), ("model", "loan")))]

        # The window restarted with the process: it holds the 120 labels matched since.
        assert m[("infersight_model_quality_window_rows", (("model", "loan"),))] == 120
        assert q("accuracy") == pytest.approx(skm.accuracy_score(y, pred))
        assert q("f1") == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        assert q("log_loss") == pytest.approx(skm.log_loss(y, p))
        assert q("brier") == pytest.approx(skm.brier_score_loss(y, p))
        assert q("roc_auc") == pytest.approx(skm.roc_auc_score(y, p))
        correct = m[("infersight_feedback_correct_total", (("model", "loan"),))]
        assert correct == sum(a == b for a, b in zip(y, pred, strict=True))

        # 4. The restarted sidecar sees v1 answer, then a rolling deploy: the address now
        #    reaches a different model, version v2.
        async with http.post(f"{url}/v2/models/loan/infer", json=infer_body(traffic, 0, 2)) as r:
            assert (await r.json())["model_version"] == "v1"
        switch.switch(("127.0.0.1", swapped.port))
        for i in range(60, 70):
            async with http.post(
                f"{url}/v2/models/loan/infer",
                json=infer_body(traffic, 4 * (i - 60), 4 * (i - 60) + 4),
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["model_version"] == "v2"

        async def parity_mismatch() -> bool:
            m = await get_metrics(http, url)
            key = ("infersight_parity_probes_total", (("model", "loan"), ("outcome", "mismatch")))
            return m.get(key, 0) > 0

        await wait_until(parity_mismatch, 30, "a parity mismatch on v2")
        m = await get_metrics(http, url)
        assert m[("infersight_model_version_changes_total", (("model", "loan"),))] == 1
        versions = {dict(k[1])["version"] for k in m if k[0] == "infersight_model_info"}
        assert versions == {"v2"}
        assert m[("infersight_profile_mismatch", (("model", "loan"),))] == 1
        assert m[("infersight_parity_max_abs_difference", (("model", "loan"),))] > 1e-3

        report = await get_json(http, f"{url}/monitoring/ml-test-score")
        state = {mon["monitor"]: (mon["automated"], mon["state"]) for mon in report["monitors"]}
        assert state[1] == (True, "alerting")  # the version changed
        assert state[3] == (True, "alerting")  # parity fails on v2
        assert state[4] == (True, "ok")
        assert state[5] == (True, "ok")
        assert state[7][0] is True
        lifecycle = await get_json(http, f"{url}/monitoring/lifecycle")
        assert lifecycle["versions"]["loan"]["version"] == "v2"
        assert lifecycle["parity"]["loan"]["outcome"] == "mismatch"
    log = sidecar.log_path.read_text()
    changed = [json.loads(line) for line in log.splitlines() if '"model.version_changed"' in line]
    assert [(c["previous"], c["version"]) for c in changed] == [("v1", "v2")]
