"""Parity probes against real MLServer: the model that made the golden outputs passes; a
different model deployed under the same name fails.

The profile is built the way a user would: training data with the served model's outputs
(`predict_proba`, the probability of class 1) in a CSV, then `infersight profile build
--prediction p --golden-rows N`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from app.cli import main
from app.config import ParitySettings, UpstreamSettings
from app.demo.data import FEATURES, generate, write_csv
from app.lifecycle.parity import ParityProber, ParityResult
from app.monitoring.profile import Profile, load_profile
from app.protocols.codecs import CODECS
from app.telemetry.parity_metrics import ParityMetrics
from app.upstream.client import UpstreamClient
from tests.integration.servers.harness import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}
GOLDEN_ROWS = 30


async def served_outputs(server: RunningServer, cols: dict[str, list[Any]], output: str) -> Any:
    n = len(cols["age"])
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": f, "shape": [n], "datatype": V2_TYPES.get(f, "BYTES"), "data": cols[f]}
            for f in FEATURES
        ],
        "outputs": [{"name": output}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/v2/models/loan/infer", json=body) as r,
    ):
        raw = await r.read()
        assert r.status == 200, raw
    (out,) = json.loads(raw)["outputs"]
    data, shape = out["data"], out["shape"]
    if len(shape) == 2:  # flat row-major data of an [n, k] tensor → rows
        data = [data[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]
    return data


async def golden_profile(
    server: RunningServer, tmp_path: Path, output: str, name: str = "profile.json"
) -> Profile:
    """Training data + the served model's outputs → CSV → `infersight profile build`."""
    train = generate(500, seed=41)
    data = await served_outputs(server, train, output)
    # predict_proba: [n, 2] rows; the monitored output is the last column (class 1).
    train["p"] = [row[-1] if isinstance(row, list) else row for row in data]
    csv = tmp_path / "train.csv"
    write_csv(train, str(csv))
    out = tmp_path / name
    code = main([
        "profile", "build", str(csv), "--target", "default", "--prediction", "p",
        "--output-name", output, "--model-name", "loan", "--golden-rows", str(GOLDEN_ROWS),
        "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    return load_profile(out)


async def probe(
    server: RunningServer, profile: Profile, repeats: int = 1
) -> tuple[list[ParityResult], CollectorRegistry]:
    registry = CollectorRegistry()
    upstream = UpstreamClient(UpstreamSettings(url=server.url, timeout_seconds=10))
    await upstream.start()
    try:
        prober = ParityProber(
            {"loan": profile}, ParitySettings(), "v2", CODECS["v2"], upstream,
            ParityMetrics(registry),
        )  # fmt: skip
        results = [(await prober.run_once())["loan"] for _ in range(repeats)]
    finally:
        await upstream.close()
    return results, registry


async def test_probabilities_match_the_same_model_and_not_a_swapped_one(
    mlserver: RunningServer, mlserver_swapped: RunningServer, tmp_path: Path
) -> None:
    profile = await golden_profile(mlserver, tmp_path, "predict_proba")
    assert profile.golden is not None
    assert len(profile.golden.rows) == GOLDEN_ROWS
    assert all(isinstance(p, float) for p in profile.golden.predictions)
    missing = sum(r["monthly_income"] is None for r in profile.golden.rows)
    assert missing > 0  # a missing value travels as null and must still match

    same, registry = await probe(mlserver, profile, repeats=5)
    for r in same:
        assert r.outcome == "ok", r
        assert r.max_abs_difference is not None
        assert r.max_abs_difference <= 1e-6
    labels = {"model": "loan"}
    assert (
        registry.get_sample_value("infersight_parity_probes_total", {**labels, "outcome": "ok"})
        == 5
    )
    assert registry.get_sample_value("infersight_parity_mismatches_total", labels) == 0
    assert registry.get_sample_value("infersight_parity_rows", labels) == GOLDEN_ROWS

    (swapped,), registry = await probe(mlserver_swapped, profile)
    assert swapped.outcome == "mismatch", swapped
    assert swapped.mismatched_rows > 0
    assert swapped.max_abs_difference is not None
    assert swapped.max_abs_difference > 1e-3
    assert (
        registry.get_sample_value("infersight_parity_mismatches_total", labels)
        == swapped.mismatched_rows
    )
    assert (
        registry.get_sample_value(
            "infersight_parity_probes_total", {**labels, "outcome": "mismatch"}
        )
        == 1
    )

    durations = [r.duration_seconds for r in same]
    print(
        f"\nparity: same model max|diff| {max(r.max_abs_difference or 0 for r in same):.3g}, "
        f"probe median {statistics.median(durations) * 1000:.1f} ms; swapped model "
        f"{swapped.mismatched_rows}/{swapped.rows} rows, max|diff| "
        f"{swapped.max_abs_difference:.3g}; {missing} golden rows with a missing income"
    )


async def test_class_labels_match_the_same_model(mlserver: RunningServer, tmp_path: Path) -> None:
    profile = await golden_profile(mlserver, tmp_path, "predict")
    assert profile.golden is not None
    assert set(map(type, profile.golden.predictions)) == {int}
    (result,), _ = await probe(mlserver, profile)
    assert result.outcome == "ok", result
    assert result.max_abs_difference == 0
