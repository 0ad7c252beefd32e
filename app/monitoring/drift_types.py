"""What the drift cycle consumes (window snapshots) and produces (an immutable report).

Snapshots are taken on the event loop (cheap copies) and shipped to a worker process; the
report comes back and is read by the metrics collector and `GET /monitoring/drift`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from app.monitoring.profile import Kind

Correction = Literal["bonferroni", "bh", "none"]


@dataclass(frozen=True, slots=True)
class FeatureSample:
    """The recent serving values of one feature (or model output), oldest first."""

    name: str
    kind: Kind
    n_rows: int
    """Rows in the window, present and missing."""
    n_missing: int
    """Rows whose value was missing (null, absent)."""
    values: np.ndarray[Any, Any] | None = None
    """numeric: the finite values (float64, arrival order); text: word counts per value."""
    bin_counts: tuple[int, ...] | None = None
    """categorical/boolean: counts per bin, in the order of the feature check's `bin_labels`
    (top-K values…, `__other__`, `__unseen__`, `__missing__` — booleans: false, true, …)."""
    texts: tuple[str, ...] | None = None
    """text: the raw values (each cut to a bounded length), for the out-of-vocabulary rate."""


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """Every window of one model at one instant."""

    model: str
    taken_at: float
    features: tuple[FeatureSample, ...]
    prediction: FeatureSample | None = None


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """How verdicts are reached (from `drift.*` settings)."""

    alpha: float = 0.01
    """Family-wise error rate per model and cycle, before the effect floor."""
    correction: Correction = "bonferroni"
    min_rows: int = 1000
    """No verdict below this many present values in a window (1,000: at 500 a 10-point share
    change of a 4-category feature is caught in only ~70 % of cycles after correction)."""
    effect_floors: dict[str, float] = field(default_factory=dict)
    """Per-test practical floor overriding the registry's default (e.g. {"ks": 0.1})."""


@dataclass(frozen=True, slots=True)
class TestResult:
    """One statistical test on one feature."""

    test: str
    statistic: float
    p_value: float | None
    effect: float | None
    """The effect size the practical floor applies to (e.g. KS D, |Δ share|)."""
    threshold: float
    """The threshold in force on the score: the effect floor or the calibrated distance."""
    direction: Literal["above", "below"]
    """Drift when the score is above (distances) or below (p-values) the threshold."""
    decides: bool
    """True for the test whose verdict is the feature's; others only inform."""
    drift: bool | None
    """This test's own verdict (None when it cannot say, e.g. too few values)."""
    p_adjusted: float | None = None
    """Deciding tests: the p-value after the multiple-testing correction (compared with alpha);
    None for informative tests and for tests left out of the correction."""


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """The verdict on one feature (or model output)."""

    feature: str
    kind: Kind
    n_rows: int
    n_missing: int
    reference_rows: int
    tests: tuple[TestResult, ...]
    drift: bool | None
    """None when the window holds fewer than `min_rows` values."""
    reason: str
    """One line for people: which test decided and why."""


@dataclass(frozen=True, slots=True)
class ModelDriftReport:
    """All verdicts of one model from one cycle."""

    model: str
    computed_at: float
    alpha: float
    correction: Correction
    min_rows: int
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None = None
    prediction_window: dict[str, float] = field(default_factory=dict)
    """mean, median, std, min, max of numeric predictions in the window."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `/monitoring/drift` and `infersight check --json`)."""
        return asdict(self)
