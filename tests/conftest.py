"""Shared fixtures: a small reference profile built from the demo's synthetic loan data."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from app.demo.data import DTYPES, generate
from app.monitoring.profile import ModelInfo, Profile
from app.monitoring.profile_builder import build_profile

# Sidecars built by tests keep feedback predictions in memory unless a test asks for a file.
os.environ.setdefault("INFERSIGHT_FEEDBACK__STORE", "sqlite::memory:")


def loan_profile(n: int = 2000, seed: int = 0, name: str = "loan", golden_rows: int = 0) -> Profile:
    """A profile of the synthetic loan data (prediction section from a score column)."""
    cols = generate(n, seed)
    # A deterministic stand-in for a model's score, so the prediction section is numeric.
    cols["score"] = [
        min(1.0, a / 100 + (0.3 if d else 0.0))
        for a, d in zip(cols["age"], cols["default"], strict=True)
    ]
    dtypes = {**DTYPES, "score": "float64"}
    profile, _ = build_profile(
        cols,
        dtypes,
        target="default",
        prediction="score",
        output_name="predict",
        model=ModelInfo(name=name, version="v1", trained_at=datetime(2026, 11, 1, tzinfo=UTC)),
        data_hash="sha256:test",
        golden_rows=golden_rows,
    )
    return profile


@pytest.fixture(scope="session")
def profile() -> Profile:
    return loan_profile()
