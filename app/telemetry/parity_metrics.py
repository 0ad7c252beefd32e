"""Parity probe metrics: golden rows replayed to the model server vs the training-time outputs.

`model` label values come from the profiles (models with golden rows); `outcome` is fixed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

PARITY_OUTCOMES = ("ok", "mismatch", "error")


class ParityMetrics:
    """The `infersight_parity_*` metrics on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.max_abs_difference = Gauge(
            "infersight_parity_max_abs_difference",
            "Largest absolute difference between served and training-time outputs on the "
            "golden rows (latest probe that got an answer; +Inf when a number was expected "
            "but none came back).",
            ["model"], registry=r,
        )  # fmt: skip
        self.mismatches = Counter(
            "infersight_parity_mismatches",
            "Golden rows whose served output differed from the training-time output, summed "
            "over probes.",
            ["model"], registry=r,
        )  # fmt: skip
        self.probes = Counter(
            "infersight_parity_probes", "Parity probes by outcome (ok, mismatch, error).",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.rows = Gauge(
            "infersight_parity_rows", "Golden rows replayed by each parity probe.", ["model"],
            registry=r,
        )  # fmt: skip
        self.last_probe = Gauge(
            "infersight_parity_last_probe_timestamp_seconds",
            "Unix time the latest parity probe finished (any outcome).", ["model"], registry=r,
        )  # fmt: skip

    def prepare(self, model: str, rows: int) -> None:
        """Create every child of a model with golden rows (series exist before the first probe)."""
        self.max_abs_difference.labels(model)
        self.mismatches.labels(model)
        for outcome in PARITY_OUTCOMES:
            self.probes.labels(model, outcome)
        self.rows.labels(model).set(rows)
        self.last_probe.labels(model)

    def observe(
        self,
        model: str,
        outcome: str,
        *,
        mismatched: int,
        max_abs_difference: float | None,
        timestamp: float,
    ) -> None:
        """Record one probe; `max_abs_difference` None (an error) leaves the gauge as it was."""
        self.probes.labels(model, outcome if outcome in PARITY_OUTCOMES else "error").inc()
        if mismatched:
            self.mismatches.labels(model).inc(mismatched)
        if max_abs_difference is not None:
            self.max_abs_difference.labels(model).set(max_abs_difference)
        self.last_probe.labels(model).set(timestamp)
