"""Metric definitions on a fresh registry, asserted with get_sample_value."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from app.api.models import ModelRouter
from app.monitoring.batch import Batch
from app.monitoring.profile import Profile
from app.telemetry.metrics import Metrics, ServingStatsCollector, cgroup_memory_limit, status_class


def _router(profile: Profile) -> tuple[CollectorRegistry, ModelRouter]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    router = ModelRouter({"loan": profile}, metrics, "v2")
    registry.register(ServingStatsCollector(router.stats()))
    return registry, router


def test_model_info_and_timestamps_come_from_the_profile(profile: Profile) -> None:
    registry, _ = _router(profile)
    labels = {"model": "loan", "version": "v1", "profile_hash": profile.content_hash()}
    assert registry.get_sample_value("infersight_model_info", labels) == 1
    created = registry.get_sample_value(
        "infersight_profile_created_timestamp_seconds", {"model": "loan"}
    )
    assert created == profile.created_at.timestamp()
    assert registry.get_sample_value("process_resident_memory_bytes") is not None


def test_reference_ratios_sum_to_one_per_feature(profile: Profile) -> None:
    registry, _ = _router(profile)
    for f in profile.features:
        total = 0.0
        for metric in registry.collect():
            if metric.name != "infersight_reference_bin_ratio":
                continue
            total += sum(s.value for s in metric.samples if s.labels["feature"] == f.name)
        assert abs(total - 1.0) < 1e-9, f.name


def test_bins_violations_and_predictions_are_exported(profile: Profile) -> None:
    registry, router = _router(profile)
    model = router.resolve("loan")
    assert model.validator is not None
    assert model.stats is not None
    report = model.validator.validate(Batch(2, {"age": [30, "x"]}))
    model.stats.observe_inputs(report)
    assert model.stats.prediction is not None
    model.stats.prediction.observe([0.2, 0.4, float("nan")])
    get = registry.get_sample_value
    assert (
        get(
            "infersight_validation_violations_total",
            {"model": "loan", "feature": "age", "kind": "wrong_type"},
        )
        == 1
    )
    assert (
        get(
            "infersight_feature_bin_total", {"model": "loan", "feature": "age", "bin": "__unseen__"}
        )
        == 1
    )
    # absent required features: every row missing
    assert (
        get(
            "infersight_validation_violations_total",
            {"model": "loan", "feature": "employment", "kind": "missing"},
        )
        == 2
    )
    assert get("infersight_prediction_count", {"model": "loan", "output": "predict"}) == 2
    assert (
        abs(get("infersight_prediction_sum", {"model": "loan", "output": "predict"}) - 0.6) < 1e-12
    )  # type: ignore[operator]
    mean = get(
        "infersight_reference_prediction_stat",
        {"model": "loan", "output": "predict", "stat": "mean"},
    )
    squares = get("infersight_prediction_squares_total", {"model": "loan", "output": "predict"})
    assert mean is not None
    assert abs(squares - ((0.2 - mean) ** 2 + (0.4 - mean) ** 2)) < 1e-12  # type: ignore[operator]
    assert (
        get(
            "infersight_prediction_bin_total",
            {"model": "loan", "output": "predict", "bin": "__unseen__"},
        )
        == 1
    )


def test_unknown_models_fold_into_other(profile: Profile) -> None:
    _, router = _router(profile)
    assert router.resolve("anything").name == "__other__"
    assert router.resolve(None).name == "loan"  # one profile: protocols without model names


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 204, 302, 404, 422, 502, 999, 42)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx", "1xx",
    ]  # fmt: skip


def test_cgroup_memory_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text("536870912\n")
    assert cgroup_memory_limit(tmp_path) == 536870912
