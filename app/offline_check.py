"""`infersight check`: the online validator and drift tests, run on a batch file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.monitoring.batch import Batch
from app.monitoring.drift_types import DriftConfig, ModelDriftReport
from app.monitoring.profile import Profile
from app.monitoring.serving_stats import ModelStats
from app.monitoring.validator import BatchReport, Validator
from app.monitoring.windows import ModelWindows


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Validation and drift verdicts for one batch."""

    n_rows: int
    validation: BatchReport
    drift: ModelDriftReport

    @property
    def drifted(self) -> list[str]:
        """Names of drifting features (and `__prediction__` for the output)."""
        names = [f.feature for f in self.drift.features if f.drift]
        if self.drift.prediction is not None and self.drift.prediction.drift:
            names.append("__prediction__")
        return names


def check_batch(
    profile: Profile,
    columns: dict[str, list[Any]],
    config: DriftConfig,
    prediction_column: str | None = None,
) -> CheckResult:
    """Validate a batch and test it for drift with the same code the sidecar runs online.

    The whole batch is one window (its size is the number of rows).
    """
    from app.monitoring.drift import evaluate

    n = len(next(iter(columns.values()))) if columns else 0
    skip = {c for c in (profile.target, prediction_column) if c}
    batch = Batch(n, {k: v for k, v in columns.items() if k not in skip})
    validator = Validator(profile)
    report = validator.validate(batch, vectorize=True)
    stats = ModelStats(profile, validator.checks)
    windows = ModelWindows(
        profile.model.name,
        validator.checks,
        stats.prediction.check if stats.prediction else None,
        rows=max(1, n),
    )
    windows.observe_inputs(report.columns, batch.columns)
    if prediction_column and stats.prediction is not None:
        windows.observe_predictions(stats.prediction.observe(columns[prediction_column]))
    drift = evaluate(profile, windows.snapshot(), config)
    return CheckResult(n, report, drift)
