"""Drift metrics, read from the latest immutable report at scrape time (never computed here).

Per-process values: diagnostics of this replica's windows. The fleet-wide verdict comes from
the bin counters in PromQL. Feature labels come from the profile; the model output is
`feature="__prediction__"`; methods and tests come from the fixed test registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.monitoring.drift_types import FeatureDrift, ModelDriftReport
from app.monitoring.windows import ModelWindows

PREDICTION_FEATURE = "__prediction__"


class DriftCollector(Collector):
    """Exports scores, p-values, verdicts, thresholds and window sizes of the latest report."""

    def __init__(
        self,
        latest: Callable[[], Mapping[str, ModelDriftReport]],
        windows: Mapping[str, ModelWindows],
    ) -> None:
        self.latest = latest
        self.windows = windows

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        score = GaugeMetricFamily(
            "infersight_drift_score", "Drift score of a feature by method (latest cycle).",
            labels=["model", "feature", "method"],
        )  # fmt: skip
        pvalue = GaugeMetricFamily(
            "infersight_drift_pvalue", "p-value of a drift test (latest cycle, uncorrected).",
            labels=["model", "feature", "test"],
        )  # fmt: skip
        detected = GaugeMetricFamily(
            "infersight_drift_detected",
            "1 when the feature drifts by the configured tests and thresholds.",
            labels=["model", "feature"],
        )  # fmt: skip
        threshold = GaugeMetricFamily(
            "infersight_drift_threshold", "Threshold in force on a drift score.",
            labels=["model", "feature", "method"],
        )  # fmt: skip
        rows = GaugeMetricFamily(
            "infersight_drift_window_rows", "Rows in the feature's window.",
            labels=["model", "feature"],
        )  # fmt: skip
        memory = GaugeMetricFamily(
            "infersight_drift_window_bytes", "Memory held by a model's drift windows.",
            labels=["model"],
        )  # fmt: skip
        pwindow = GaugeMetricFamily(
            "infersight_prediction_window", "Prediction statistics over the window.",
            labels=["model", "output", "stat"],
        )  # fmt: skip
        for model, report in self.latest().items():
            items: list[tuple[str, FeatureDrift]] = [(f.feature, f) for f in report.features]
            if report.prediction is not None:
                items.append((PREDICTION_FEATURE, report.prediction))
            for label, fd in items:
                rows.add_metric([model, label], fd.n_rows)
                if fd.drift is not None:
                    detected.add_metric([model, label], 1.0 if fd.drift else 0.0)
                for t in fd.tests:
                    score.add_metric([model, label, t.test], t.statistic)
                    threshold.add_metric([model, label, t.test], t.threshold)
                    if t.p_value is not None:
                        pvalue.add_metric([model, label, t.test], t.p_value)
            output = report.prediction.feature if report.prediction else "prediction"
            for stat, value in report.prediction_window.items():
                pwindow.add_metric([model, output, stat], value)
        for model, w in self.windows.items():
            memory.add_metric([model], w.nbytes)
        yield from (score, pvalue, detected, threshold, rows, memory, pwindow)
