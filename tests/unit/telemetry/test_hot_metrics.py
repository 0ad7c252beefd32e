"""Lock-free request metrics expose exactly what prometheus_client's would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app.telemetry.hot_metrics import HotCounterFamily, HotHistogramFamily


def test_histogram_matches_prometheus_client() -> None:
    bounds = [0.001, 0.01, 0.1, 1.0]
    values = [0.0005, 0.001, 0.0011, 0.01, 0.5, 1.0, 7.0, 0.1]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogramFamily("x_seconds", "d", ["model"], ours, bounds).labels("m")
    ref = Histogram("x_seconds", "d", ["model"], buckets=bounds, registry=theirs).labels("m")
    for v in values:
        hot.observe(v)
        ref.observe(v)
    keep = ("x_seconds_bucket", "x_seconds_count", "x_seconds_sum")

    def samples(registry: CollectorRegistry) -> set[str]:
        text = generate_latest(registry).decode()
        return {line for line in text.splitlines() if line.startswith(keep)}

    assert samples(ours) == samples(theirs)


def test_counter_children_are_per_label_set() -> None:
    registry = CollectorRegistry()
    family = HotCounterFamily("y", "d", ["model", "status"], registry)
    a = family.labels("m", "2xx")
    a.inc()
    a.inc(2)
    assert family.labels("m", "2xx") is a
    family.labels("m", "5xx")
    assert registry.get_sample_value("y_total", {"model": "m", "status": "2xx"}) == 3
    assert registry.get_sample_value("y_total", {"model": "m", "status": "5xx"}) == 0
