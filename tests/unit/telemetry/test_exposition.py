"""The cached exposition writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.config import Settings, UpstreamSettings
from app.monitoring.profile import Profile
from app.telemetry.exposition import Exposition, FixedLabels, fixed_sample
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


class _Fixed(Collector):
    """A collector that reuses its label objects, as the serving-stats collector does."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, ...], FixedLabels] = {}
        self.values: list[float] = [0, 5, 999_999, 10**6, 12_345_678, -3, -(10**15) + 1, 2**70,
                                    0.1, -0.0, float("inf"), float("nan")]  # fmt: skip

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["model", "feature", "bin"]
        counts = CounterMetricFamily("fixed_count", "counts", labels=labels)
        ratios = GaugeMetricFamily("fixed_ratio", "ratios", labels=labels)
        for i, v in enumerate(self.values):
            key = ("m", 'qu"o\\te\n', f"b{i}")
            fixed_sample(counts, "_total", self.cache, ("c", *key), abs(v))
            fixed_sample(ratios, "", self.cache, ("r", *key), v)
        yield from (counts, ratios)


def test_fixed_labels_render_identically_scrape_after_scrape() -> None:
    registry = CollectorRegistry()
    fixed = _Fixed()
    registry.register(fixed)
    exposition = Exposition(registry)
    assert exposition.render() == generate_latest(registry)
    labels = next(iter(fixed.cache.values()))
    assert labels.prefixes  # the prefix is kept on the labels object
    fixed.values = [v + 1 for v in fixed.values]
    assert exposition.render() == generate_latest(registry)
    assert len(fixed.cache) == 2 * len(fixed.values)  # no new label objects for the same series


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


class _ResizedOffLoop(Collector):
    """Raises what iterating a dict the loop just grew raises, unless on the main thread."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("dictionary changed size during iteration")
        yield GaugeMetricFamily("resized", "resized", value=1.0)


async def test_render_off_loop_matches_and_falls_back_to_the_loop() -> None:
    registry = CollectorRegistry()
    registry.register(_Fixed())
    exposition = Exposition(registry)
    assert await exposition.render_off_loop() == generate_latest(registry)
    registry.register(_ResizedOffLoop())
    assert await exposition.render_off_loop() == generate_latest(registry)
    assert b"resized 1.0" in await exposition.render_off_loop()
