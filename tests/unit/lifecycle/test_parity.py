"""ParityProber against a small real HTTP model on loopback: ok, mismatch, errors, schedule."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from app.config import ParitySettings, UpstreamSettings
from app.lifecycle.parity import ParityProber, infer_path
from app.monitoring.profile import ModelInfo, Profile
from app.monitoring.profile_builder import BuildOptions, build_profile
from app.protocols import mlflow, v1, v2
from app.protocols.codecs import CODECS
from app.telemetry.parity_metrics import ParityMetrics
from app.upstream.client import UpstreamClient
from tests.support.stub_upstream import StubUpstream, free_port

FEATURES = ["age", "income", "status", "owner"]


def score(age: Any, shift: float) -> float:
    return float(age) / 100 + shift


def make_profile(
    name: str = "loan", golden_rows: int = 6, output_name: str | None = "predict_proba"
) -> Profile:
    n = 60
    cols: dict[str, list[Any]] = {
        "age": [20 + i for i in range(n)],
        "income": [None if i % 7 == 0 else 1000.0 + 10 * i for i in range(n)],
        "status": ["single" if i % 2 else "married" for i in range(n)],
        "owner": [i % 3 == 0 for i in range(n)],
        "p": [score(20 + i, 0.0) for i in range(n)],
    }
    dtypes = {"age": "int64", "income": "float64", "status": "object", "owner": "bool"}
    profile, _ = build_profile(
        cols, {**dtypes, "p": "float64"}, target=None, prediction="p", output_name=output_name,
        model=ModelInfo(name=name), data_hash="h", options=BuildOptions(calibration_rows=0),
        golden_rows=golden_rows,
    )  # fmt: skip
    return profile


@dataclass
class Model:
    """A model server computing age/100 + shift; answers 2-D probabilities on V2 when asked."""

    shift: float = 0.0
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def infer(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.record(request, body)
            doc = json.loads(body)
            batch = v2.decode_request(body, self.features)
            p = [score(a, self.shift) for a in batch.columns["age"]]
            wanted = [o["name"] for o in doc.get("outputs", [])] or ["predict"]
            outputs = []
            for name in wanted:
                if name == "predict_proba":
                    data = [[1 - x, x] for x in p]
                    outputs.append({"name": name, "shape": [len(p), 2], "datatype": "FP64",
                                    "data": data})  # fmt: skip
                else:
                    outputs.append({"name": name, "shape": [len(p)], "datatype": "FP64",
                                    "data": p})  # fmt: skip
            return web.json_response({"model_name": request.match_info["name"], "outputs": outputs})

        async def predict(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.record(request, body)
            batch = v1.decode_request(body, self.features)
            return web.json_response(
                {"predictions": [score(a, self.shift) for a in batch.columns["age"]]}
            )

        async def invocations(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.record(request, body)
            batch = mlflow.decode_request(body, self.features, request.content_type)
            return web.json_response(
                {"predictions": [score(a, self.shift) for a in batch.columns["age"]]}
            )

        app = web.Application()
        app.router.add_post("/v2/models/{name}/infer", infer)
        app.router.add_post("/v1/models/{name}:predict", predict)
        app.router.add_post("/invocations", invocations)
        return app

    def record(self, request: web.Request, body: bytes) -> None:
        self.requests.append(
            {
                "path": request.raw_path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "doc": json.loads(body),
            }
        )


@pytest.fixture
async def model() -> AsyncIterator[tuple[Model, str]]:
    m = Model()
    runner = web.AppRunner(m.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield m, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def client(url: str) -> UpstreamClient:
    c = UpstreamClient(UpstreamSettings(url=url, timeout_seconds=2, connect_timeout_seconds=1))
    await c.start()
    return c


def prober(
    profiles: dict[str, Profile],
    upstream: UpstreamClient,
    registry: CollectorRegistry,
    protocol: str = "v2",
    **settings: Any,
) -> ParityProber:
    return ParityProber(
        profiles,
        ParitySettings(**settings),
        protocol,
        CODECS[protocol],
        upstream,
        ParityMetrics(registry),
        first_delay_seconds=0.01,
        clock=lambda: 1_700_000_000.0,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_v2_same_model_is_ok(model: tuple[Model, str], registry: CollectorRegistry) -> None:
    m, url = model
    profile = make_profile()
    upstream = await client(url)
    try:
        p = prober({"loan": profile}, upstream, registry)
        assert p.models == ["loan"]
        assert sample(registry, "infersight_parity_rows", model="loan") == 6
        assert sample(registry, "infersight_parity_last_probe_timestamp_seconds", model="loan") == 0
        results = await p.run_once()
    finally:
        await upstream.close()
    r = results["loan"]
    assert r.outcome == "ok", r
    assert (r.rows, r.mismatched_rows, r.error) == (6, 0, None)
    assert r.max_abs_difference is not None
    assert r.max_abs_difference <= 1e-6
    assert r.tolerance == 1e-6
    assert r.timestamp == 1_700_000_000.0
    assert p.latest["loan"] is r
    assert p.report()["loan"]["outcome"] == "ok"
    (req,) = m.requests
    assert req["path"] == "/v2/models/loan/infer"
    assert req["headers"]["x-request-id"] == "infersight-parity"
    assert req["doc"]["outputs"] == [{"name": "predict_proba"}]
    assert req["doc"]["parameters"] == {"content_type": "pd"}
    assert [t["name"] for t in req["doc"]["inputs"]] == FEATURES
    assert sample(registry, "infersight_parity_probes_total", model="loan", outcome="ok") == 1
    assert sample(registry, "infersight_parity_probes_total", model="loan", outcome="error") == 0
    assert sample(registry, "infersight_parity_mismatches_total", model="loan") == 0
    assert sample(registry, "infersight_parity_max_abs_difference", model="loan") <= 1e-6  # type: ignore[operator]
    assert (
        sample(registry, "infersight_parity_last_probe_timestamp_seconds", model="loan")
        == 1_700_000_000.0
    )


async def test_v2_different_model_mismatches_and_counts_rows(
    model: tuple[Model, str], registry: CollectorRegistry
) -> None:
    m, url = model
    m.shift = 0.01
    upstream = await client(url)
    try:
        p = prober({"loan": make_profile()}, upstream, registry)
        first = (await p.run_once())["loan"]
        await p.run_once()
    finally:
        await upstream.close()
    assert first.outcome == "mismatch"
    assert first.mismatched_rows == 6
    assert first.max_abs_difference == pytest.approx(0.01)
    assert len(first.examples) == 5
    assert first.examples[0].expected == pytest.approx(0.2)
    assert first.examples[0].actual == pytest.approx(0.21)
    assert sample(registry, "infersight_parity_probes_total", model="loan", outcome="mismatch") == 2
    assert sample(registry, "infersight_parity_mismatches_total", model="loan") == 12
    assert sample(registry, "infersight_parity_max_abs_difference", model="loan") == pytest.approx(
        0.01
    )
    doc = json.loads(json.dumps(p.report(), allow_nan=False))
    assert doc["loan"]["mismatched_rows"] == 6


async def test_settings_tolerance_overrides_the_profile(
    model: tuple[Model, str], registry: CollectorRegistry
) -> None:
    m, url = model
    m.shift = 0.01
    upstream = await client(url)
    try:
        result = (await prober({"loan": make_profile()}, upstream, registry, tolerance=0.02)
                  .run_once())["loan"]  # fmt: skip
    finally:
        await upstream.close()
    assert result.outcome == "ok"
    assert result.tolerance == 0.02


@pytest.mark.parametrize(
    ("protocol", "request_format", "path", "key"),
    [
        ("v1", "columns", "/v1/models/loan:predict", "instances"),
        ("v1", "matrix", "/v1/models/loan:predict", "instances"),
        ("mlflow", "auto", "/invocations", "dataframe_split"),
        ("v2", "matrix", "/v2/models/loan/infer", "inputs"),
    ],
)
async def test_protocols_and_formats(
    model: tuple[Model, str],
    registry: CollectorRegistry,
    protocol: str,
    request_format: str,
    path: str,
    key: str,
) -> None:
    m, url = model
    # Matrix rows must be numbers: a profile of the numeric features only.
    profile = make_profile(output_name=None if protocol != "v2" else "predict")
    if request_format == "matrix":
        assert profile.golden is not None
        numeric = [f for f in profile.features if f.name in ("age", "income")]
        rows = [{k: r[k] for k in ("age", "income")} for r in profile.golden.rows]
        golden = profile.golden.model_copy(update={"rows": rows})
        profile = profile.model_copy(update={"features": numeric, "golden": golden})
        m.features = ["age", "income"]
    upstream = await client(url)
    try:
        p = prober({"loan": profile}, upstream, registry, protocol, request_format=request_format)
        result = (await p.run_once())["loan"]
    finally:
        await upstream.close()
    assert result.outcome == "ok", result
    (req,) = m.requests
    assert req["path"] == path
    assert key in req["doc"]


async def test_matrix_with_string_features_is_an_error_not_a_crash(
    model: tuple[Model, str], registry: CollectorRegistry
) -> None:
    m, url = model
    upstream = await client(url)
    try:
        p = prober({"loan": make_profile()}, upstream, registry, request_format="matrix")
        result = (await p.run_once())["loan"]
    finally:
        await upstream.close()
    assert result.outcome == "error"
    assert "matrix" in (result.error or "")
    assert m.requests == []


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error500", "model server answered 500"),
        ("garbage", "decode_error"),
        ("bad_shape", "decode_error"),
        ("drop", "upstream_unavailable"),
    ],
)
async def test_upstream_failures_are_errors(
    registry: CollectorRegistry, mode: str, message: str
) -> None:
    async with StubUpstream() as stub:
        stub.state.mode = mode
        upstream = await client(stub.url)
        try:
            p = prober({"loan": make_profile(output_name="predict")}, upstream, registry)
            result = (await p.run_once())["loan"]
        finally:
            await upstream.close()
    assert result.outcome == "error"
    assert message in (result.error or ""), result.error
    assert result.max_abs_difference is None
    assert sample(registry, "infersight_parity_probes_total", model="loan", outcome="error") == 1
    assert sample(registry, "infersight_parity_max_abs_difference", model="loan") == 0
    assert p.report()["loan"]["error"]


async def test_unreachable_and_timeout(registry: CollectorRegistry) -> None:
    upstream = await client(f"http://127.0.0.1:{free_port()}")
    try:
        result = (await prober({"loan": make_profile()}, upstream, registry).run_once())["loan"]
    finally:
        await upstream.close()
    assert result.outcome == "error"
    assert "unavailable" in (result.error or "")
    async with StubUpstream() as stub:
        stub.state.delay = 1.0
        upstream = UpstreamClient(UpstreamSettings(url=stub.url, timeout_seconds=0.2))
        await upstream.start()
        try:
            p = prober({"loan": make_profile()}, upstream, CollectorRegistry())
            result = (await p.run_once())["loan"]
        finally:
            await upstream.close()
    assert result.outcome == "error"
    assert "timeout" in (result.error or "")


async def test_constant_wrong_answer_is_a_mismatch(registry: CollectorRegistry) -> None:
    async with StubUpstream() as stub:
        stub.state.prediction = None  # the model answers null where a number is expected
        upstream = await client(stub.url)
        try:
            p = prober({"loan": make_profile(output_name="predict")}, upstream, registry)
            result = (await p.run_once())["loan"]
        finally:
            await upstream.close()
    assert result.outcome == "mismatch"
    assert result.max_abs_difference == math.inf
    assert sample(registry, "infersight_parity_max_abs_difference", model="loan") == math.inf
    assert p.report()["loan"]["max_abs_difference"] is None
    json.dumps(p.report(), allow_nan=False)


async def test_models_without_golden_rows_are_not_probed(registry: CollectorRegistry) -> None:
    plain = make_profile(golden_rows=0)
    assert plain.golden is None
    upstream = await client(f"http://127.0.0.1:{free_port()}")
    try:
        p = prober({"plain": plain, "loan": make_profile()}, upstream, registry)
        assert p.models == ["loan"]
        assert sample(registry, "infersight_parity_rows", model="plain") is None
        empty = prober({"plain": plain}, upstream, CollectorRegistry())
        assert await empty.run_once() == {}
        await asyncio.wait_for(empty.run_forever(), 1.0)  # nothing to do: returns at once
        disabled = prober({"loan": make_profile()}, upstream, CollectorRegistry(), enabled=False)
        await asyncio.wait_for(disabled.run_forever(), 1.0)
    finally:
        await upstream.close()


async def test_run_forever_probes_soon_then_every_interval_and_survives_errors(
    model: tuple[Model, str], registry: CollectorRegistry
) -> None:
    m, url = model
    upstream = await client(url)
    dead = await client(f"http://127.0.0.1:{free_port()}")
    try:
        p = prober({"loan": make_profile()}, upstream, registry, interval_seconds=0.05)
        broken = prober({"loan": make_profile()}, dead, CollectorRegistry(), interval_seconds=0.05)
        tasks = [asyncio.create_task(p.run_forever()), asyncio.create_task(broken.run_forever())]
        await asyncio.sleep(0.4)
        for task in tasks:
            assert not task.done()
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await upstream.close()
        await dead.close()
    ok = sample(registry, "infersight_parity_probes_total", model="loan", outcome="ok")
    assert ok is not None
    assert ok >= 3
    assert len(m.requests) == ok
    assert broken.latest["loan"].outcome == "error"


def test_infer_paths_quote_the_model_name() -> None:
    assert infer_path("v2", "loan") == "/v2/models/loan/infer"
    assert infer_path("v2", "a/b c") == "/v2/models/a%2Fb%20c/infer"
    assert infer_path("v1", "loan") == "/v1/models/loan:predict"
    assert infer_path("mlflow", "loan") == "/invocations"
