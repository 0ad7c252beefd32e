"""The cached exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from app.config import Settings, UpstreamSettings
from app.monitoring.profile import Profile
from app.telemetry.exposition import Exposition
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row, v2_request


def test_every_metric_type_and_awkward_label_values_render_identically() -> None:
    registry = CollectorRegistry()
    c = Counter("c", "a counter\\ with a\nnewline", ["model", "bin"], registry=registry)
    c.labels('qu"ote', "back\\slash").inc(3)
    c.labels("new\nline", "ünïcödé").inc(0.1)
    Gauge("g", "a gauge", registry=registry).set(float("nan"))
    Gauge("big", "big", registry=registry).set(1.5e300)
    h = Histogram("h_seconds", "h", ["model"], buckets=(0.1, 1.0), registry=registry)
    h.labels("m").observe(0.05)
    h.labels("m").observe(7)
    Info("build", "build info", registry=registry).info({"version": "1.0"})
    exposition = Exposition(registry)
    assert exposition.render() == generate_latest(registry)
    c.labels('qu"ote', "back\\slash").inc()  # values change, cached prefixes stay right
    assert exposition.render() == generate_latest(registry)


async def test_the_sidecars_metrics_render_identically(profile: Profile) -> None:
    async with (
        StubUpstream() as up,
        run_sidecar(Settings(upstream=UpstreamSettings(url=up.url)), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            body = v2_request([good_row(), good_row(age="x")], "e1")
            async with http.post(f"{sc.url}/v2/models/loan/infer", json=body) as r:
                assert r.status in (200, 422)
            async with http.get(f"{sc.url}/metrics") as r:
                served = await r.read()
        exposition = Exposition(sc.registry)
        first = exposition.render()
        second = exposition.render()  # from the cache
        reference = generate_latest(sc.registry)

    def stable(text: bytes) -> list[bytes]:
        """Without the process_* samples (CPU time and memory move between two renders)."""
        return [line for line in text.splitlines() if not line.startswith(b"process_")]

    assert len(stable(first)) > 100
    assert stable(first) == stable(second) == stable(reference) == stable(served)
