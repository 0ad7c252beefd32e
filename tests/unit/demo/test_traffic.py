"""The traffic generator against a stub server on loopback (bounded in time and concurrency,
statuses counted), and the dashboard's reading of a sidecar's `/metrics`."""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.demo.dashboard import Dashboard, histogram_quantile, parse_metrics, summary_table
from app.demo.data import FEATURES, TARGET, generate
from app.demo.model_server import BackgroundServer
from app.demo.scenarios import INVALID_AGE, by_name, unchanged
from app.demo.traffic import (
    RowSource,
    TrafficConfig,
    TrafficStats,
    batch_size,
    encode_request,
    model_version_of,
    run_traffic,
)


@dataclass
class Stub:
    """A stand-in for the sidecar: 422 for the invalid sprinkle, 200 otherwise, and /metrics."""

    delay: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    metrics: bytes = b""
    bodies: dict[str, Any] = field(default_factory=dict)
    """Request bodies by their id."""

    async def infer(self, request: Request) -> Response:
        body = await request.body()
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.inflight -= 1
        doc = orjson.loads(body)
        status = 422 if INVALID_AGE.encode() in body else 200
        answer = {"id": doc["id"], "model_version": "v-stub"}
        self.bodies[doc["id"]] = doc
        echoed = {"x-request-id": "echo-" + request.headers["x-request-id"]}
        return Response(orjson.dumps(answer), status, echoed, media_type="application/json")

    async def scrape(self, request: Request) -> Response:
        return Response(self.metrics, media_type="text/plain")


@pytest.fixture(scope="module")
def source() -> RowSource:
    return RowSource(seed=5, size=500)


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    stub = Stub()
    app = Starlette(routes=[
        Route("/v2/models/{name}/infer", stub.infer, methods=["POST"]),
        Route("/metrics", stub.scrape),
    ])  # fmt: skip
    with BackgroundServer(app) as server:
        yield stub, server.url


def test_requests_look_like_a_pandas_v2_client(source: RowSource) -> None:
    batch = source.sample(3, random.Random(0))
    batch[0]["monthly_income"] = None
    doc = encode_request(batch, "id-1")
    assert doc["id"] == "id-1"
    assert doc["parameters"] == {"content_type": "pd"}
    types = {t["name"]: t["datatype"] for t in doc["inputs"]}
    assert types == {
        "age": "INT64", "monthly_income": "FP64", "marital_status": "BYTES",
        "employment": "BYTES", "loan_amount": "FP64", "has_mortgage": "BOOL", "purpose": "BYTES",
    }  # fmt: skip
    assert all(t["shape"] == [3] and len(t["data"]) == 3 for t in doc["inputs"])
    one = encode_request([{**batch[0], "age": INVALID_AGE}], "id-2")
    types = {t["name"]: t["datatype"] for t in one["inputs"]}
    assert (types["age"], types["monthly_income"]) == ("BYTES", "FP64")  # all-null stays FP64


def test_rows_are_drawn_with_their_true_labels() -> None:
    source = RowSource(seed=5, size=300)
    columns = generate(300, seed=5)
    truth = {tuple(columns[f][i] for f in FEATURES): columns[TARGET][i] for i in range(300)}
    batch, labels = source.draw(50, random.Random(4))
    assert batch == source.sample(50, random.Random(4))  # the same draws
    assert labels == [truth[tuple(row[f] for f in FEATURES)] for row in batch]
    assert set(labels) == {0, 1}


async def test_answered_requests_go_to_on_answer_with_their_labels(
    stub: tuple[Stub, str], source: RowSource
) -> None:
    server, url = stub
    answers: list[tuple[str, list[int], str | None]] = []
    config = TrafficConfig(url=url, rate=40.0, invalid_share=0.3)
    stats = await run_traffic(
        config, 0.6, unchanged, source, seed=3, on_answer=lambda *a: answers.append(a)
    )
    assert stats.statuses[422] > 0  # rejected requests have no prediction to label
    assert len(answers) == stats.statuses[200] > 0
    truth = {
        tuple(row[f] for f in FEATURES): y
        for row, y in zip(source.pool, source.labels, strict=True)
    }
    for request_id, labels, version in answers:
        assert request_id.startswith("echo-")  # the id the server answered with
        assert version == "v-stub"
        sent = server.bodies[request_id.removeprefix("echo-")]
        columns = {t["name"]: t["data"] for t in sent["inputs"]}
        rows = list(zip(*(columns[f] for f in FEATURES), strict=True))
        assert labels == [truth[row] for row in rows]


def test_model_version_is_read_from_v2_answers() -> None:
    assert model_version_of(b'{"model_version": "v2-buggy", "outputs": []}') == "v2-buggy"
    assert model_version_of(b'{"outputs": []}') is None
    assert model_version_of(b"[1]") is None
    assert model_version_of(b"not json") is None


def test_batch_sizes_mix_single_rows_and_batches_up_to_32() -> None:
    rng = random.Random(1)
    sizes = [batch_size(rng) for _ in range(2000)]
    assert min(sizes) == 1
    assert max(sizes) == 32
    assert 0.3 < sizes.count(1) / len(sizes) < 0.5
    assert {batch_size(rng, max_batch=1) for _ in range(20)} == {1}


async def test_traffic_is_bounded_in_time_and_counts_statuses(
    stub: tuple[Stub, str], source: RowSource
) -> None:
    _, url = stub
    config = TrafficConfig(url=url, rate=40.0, invalid_share=0.3)
    started = time.monotonic()
    stats = await run_traffic(config, 1.0, unchanged, source, seed=2)
    assert time.monotonic() - started < 2.0
    assert set(stats.statuses) == {200, 422}
    assert 20 <= stats.requests <= 42
    assert sum(stats.statuses.values()) == stats.requests == len(stats.latencies)
    assert stats.rows > stats.requests
    assert stats.status_classes() == {"2xx": stats.statuses[200], "4xx": stats.statuses[422]}
    q50, q99 = stats.quantile(0.5), stats.quantile(0.99)
    assert q50 is not None
    assert q99 is not None
    assert 0 < q50 <= q99


async def test_concurrency_is_bounded(stub: tuple[Stub, str], source: RowSource) -> None:
    server, url = stub
    server.delay = 0.2
    config = TrafficConfig(url=url, rate=200.0, concurrency=3, invalid_share=0.0)
    stats = await run_traffic(config, 0.7, unchanged, source)
    assert server.max_inflight <= 3
    assert 3 <= stats.requests <= 15
    assert set(stats.statuses) == {200}


async def test_a_hanging_server_cannot_hold_the_generator(
    stub: tuple[Stub, str], source: RowSource
) -> None:
    server, url = stub
    server.delay = 1.0
    config = TrafficConfig(url=url, rate=20.0, timeout_seconds=0.3)
    started = time.monotonic()
    stats = await run_traffic(config, 0.3, unchanged, source)
    assert time.monotonic() - started < 0.3 + 0.3 + 0.9  # duration + drain + slack
    assert not stats.statuses
    assert sum(stats.errors.values()) == stats.requests > 0


async def test_an_unreachable_server_is_counted_not_raised(source: RowSource) -> None:
    with BackgroundServer(Starlette()) as closed:
        url = closed.url
    stats = await run_traffic(TrafficConfig(url=url, rate=30.0), 0.3, unchanged, source)
    assert stats.requests > 0
    assert not stats.statuses
    assert stats.status_classes() == {"error": stats.requests}
    assert stats.quantile(0.5) is None


@dataclass
class SidecarMetrics:
    """A few of the sidecar's documented metrics, in a registry of their own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        reg = self.registry
        self.requests = Counter(
            "infersight_requests_total", "", ["model", "protocol", "status"], registry=reg
        )
        self.rejected = Counter(
            "infersight_rejected_requests_total", "", ["model", "reason"], registry=reg
        )
        self.duration = Histogram(
            "infersight_request_duration_seconds", "", ["model", "protocol"],
            buckets=[0.01, 0.1, 1.0], registry=reg,
        )  # fmt: skip
        self.violations = Counter(
            "infersight_validation_violations_total", "", ["model", "feature", "kind"],
            registry=reg,
        )  # fmt: skip
        self.bins = Counter(
            "infersight_feature_bin_total", "", ["model", "feature", "bin"], registry=reg
        )
        ref = Gauge("infersight_reference_bin_ratio", "", ["model", "feature", "bin"], registry=reg)
        for bin_, ratio in [("employed", 0.7), ("retired", 0.3), ("__unseen__", 0.0)]:
            ref.labels("loan", "employment", bin_).set(ratio)

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def test_dashboard_reads_a_scenario_from_metric_deltas(stub: tuple[Stub, str]) -> None:
    server, url = stub
    m = SidecarMetrics()
    m.requests.labels("loan", "v2", "2xx").inc(50)  # before the scenario: not counted
    m.bins.labels("loan", "employment", "employed").inc(700)
    server.metrics = m.text()
    out = io.StringIO()
    async with Dashboard(f"{url}/metrics", Console(file=out, width=120)) as dash:
        stats = TrafficStats()
        stats.record(200, 0.01, 3)
        await dash.begin(by_name("new_category"), "3/7", 10.0, stats)
        m.requests.labels("loan", "v2", "2xx").inc(90)
        m.requests.labels("loan", "v2", "4xx").inc(10)
        m.rejected.labels("loan", "enforce").inc(10)
        m.violations.labels("loan", "employment", "unknown_category").inc(40)
        m.bins.labels("loan", "employment", "employed").inc(60)
        m.bins.labels("loan", "employment", "__unseen__").inc(40)
        for _ in range(99):
            m.duration.labels("loan", "v2").observe(0.005)
        m.duration.labels("loan", "v2").observe(0.5)
        server.metrics = m.text()
        live_view = dash.render()
        result = await dash.end()
    assert result is not None
    seen = result.seen
    assert seen is not None
    assert seen.statuses == {"2xx": 90, "4xx": 10}
    assert seen.rejected == {"enforce": 10}
    assert seen.violations == {("employment", "unknown_category"): 40}
    assert result.violations_by_kind() == {"unknown_category": 40}
    assert seen.shifts[0].describe() == "employment[__unseen__] 40% (ref 0%)"
    assert seen.p50 is not None
    assert seen.p50 <= 0.01
    assert "employment[__unseen__]" in result.what_was_seen()
    console = Console(file=out, width=120)
    console.print(live_view)
    console.print(summary_table([result]))
    text = out.getvalue()
    assert "new_category" in text
    assert "__unseen__" in text


async def test_dashboard_shows_nothing_for_absent_metrics(stub: tuple[Stub, str]) -> None:
    server, url = stub
    server.metrics = b"# nothing InferSight exports here\n"
    out = io.StringIO()
    async with Dashboard(f"{url}/metrics", Console(file=out, width=100)) as dash:
        await dash.begin(by_name("baseline"), "1/7", 5.0, TrafficStats())
        await dash.scrape()
        Console(file=out).print(dash.render())
        assert dash.plain_line().startswith("[baseline]")
        result = await dash.end()
    assert result is not None
    assert result.seen is not None
    assert result.seen.requests == 0
    assert not result.seen.shifts
    assert "no sidecar metrics" in result.what_was_seen()


async def test_dashboard_survives_an_unreachable_sidecar() -> None:
    with BackgroundServer(Starlette()) as closed:
        url = closed.url
    async with Dashboard(f"{url}/metrics", Console(file=io.StringIO())) as dash:
        assert await dash.scrape() is None
        assert dash.error is not None
        assert dash.window() is None


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == pytest.approx(0.1)
    assert parse_metrics("this is { not prometheus").samples == {}
