"""The demo's input scenarios, run through the same validator, windows and drift tests the
sidecar uses: the changed feature drifts, the untouched ones do not."""

from __future__ import annotations

import random

import pytest

from app.demo.data import FEATURES, generate, rows
from app.demo.scenarios import by_name
from app.monitoring.drift_types import DriftConfig
from app.offline_check import check_batch
from tests.conftest import loan_profile

EXPECTED = {
    "baseline": set(),
    "covariate_shift": {"age"},
    "new_category": {"employment"},
    "missing_feature": {"monthly_income"},
    "unit_change": {"monthly_income"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_drifts_exactly_the_changed_feature(name: str) -> None:
    profile = loan_profile(n=5000, seed=0)
    traffic = rows(generate(1200, seed=101), FEATURES)
    changed = by_name(name).transform(traffic, random.Random(7))
    columns = {f: [r.get(f) for r in changed] for f in FEATURES}
    result = check_batch(profile, columns, DriftConfig(min_rows=300))
    assert set(result.drifted) == EXPECTED[name]
    assert all(f.drift is not None for f in result.drift.features)
