"""Drift windows: bounded rings fed from validator results, snapshots oldest first."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.monitoring.batch import Batch
from app.monitoring.profile import Profile
from app.monitoring.serving_stats import ModelStats
from app.monitoring.validator import Validator
from app.monitoring.windows import STAGE_ROWS, ModelWindows, Ring


def test_ring_keeps_the_last_values_oldest_first() -> None:
    ring = Ring(5)
    ring.extend([1.0, 2.0, 3.0])
    assert ring.snapshot().tolist() == [1.0, 2.0, 3.0]
    ring.extend([4.0, 5.0, 6.0, 7.0])
    assert ring.snapshot().tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    ring.extend(np.arange(100, 112, dtype=float))  # more than the capacity at once
    assert ring.snapshot().tolist() == [107.0, 108.0, 109.0, 110.0, 111.0]
    assert ring.size == 5


def test_timed_ring_drops_old_entries_from_snapshots() -> None:
    ring = Ring(10, timed=True)
    ring.extend([1.0, 2.0], now=100.0)
    ring.extend([3.0], now=200.0)
    assert ring.snapshot(since=150.0).tolist() == [3.0]
    assert ring.snapshot().tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 2 * STAGE_ROWS),
    appends=st.lists(
        st.tuples(st.integers(0, 3 * STAGE_ROWS), st.integers(0, 4), st.booleans()), max_size=25
    ),
)
def test_staged_ring_matches_a_plain_bounded_queue(
    capacity: int, appends: list[tuple[int, int, bool]]
) -> None:
    """Staged small appends, direct large ones and flag runs, any interleaving: the ring holds
    exactly the last `capacity` values with their arrival times, in order."""
    ring = Ring(capacity, timed=True)
    flags = Ring(capacity, np.bool_)
    expected: deque[tuple[float, float]] = deque(maxlen=capacity)
    expected_flags: deque[bool] = deque(maxlen=capacity)
    counter = 0
    for step, (n, n_true, snapshot) in enumerate(appends):
        values = [float(counter + i) for i in range(n)]
        counter += n
        ring.extend(values if n < STAGE_ROWS else np.array(values), now=float(step))
        expected.extend((v, float(step)) for v in values)
        k = min(n_true, n)
        flags.extend_flags(k, n)
        expected_flags.extend([True] * k + [False] * (n - k))
        assert ring.size == len(expected)
        if snapshot:
            assert ring.snapshot().tolist() == [v for v, _ in expected]
    assert ring.snapshot().tolist() == [v for v, _ in expected]
    half = len(appends) / 2
    assert ring.snapshot(since=half).tolist() == [v for v, t in expected if t >= half]
    assert flags.snapshot().tolist() == list(expected_flags)


def _windows(profile: Profile, rows: int = 50) -> tuple[Validator, ModelWindows]:
    validator = Validator(profile)
    stats = ModelStats(profile, validator.checks)
    assert stats.prediction is not None
    return validator, ModelWindows("loan", validator.checks, stats.prediction.check, rows=rows)


def test_windows_hold_values_bins_and_missing_counts(profile: Profile) -> None:
    validator, windows = _windows(profile)
    batch = Batch(
        4,
        {
            "age": [30, 40, None, 50],
            "monthly_income": [1000.0, None, None, 2000.0],
            "employment": ["employed", "employed", "retired", "astronaut"],
            "purpose": ["buy a car", None, "pay the university tuition fees", "x" * 5000],
        },
    )
    report = validator.validate(batch)
    windows.observe_inputs(report.columns, batch.columns)
    snap = windows.snapshot()
    by_name = {f.name: f for f in snap.features}
    age = by_name["age"]
    assert age.values is not None
    assert age.values.tolist() == [30.0, 40.0, 50.0]
    assert (age.n_rows, age.n_missing) == (4, 1)
    income = by_name["monthly_income"]
    assert (income.n_rows, income.n_missing) == (4, 2)
    emp = by_name["employment"]
    labels = validator.by_name["employment"].bin_labels
    assert emp.bin_counts is not None
    counts = dict(zip(labels, emp.bin_counts, strict=True))
    assert counts["employed"] == 2
    assert counts["retired"] == 1
    assert counts["__unseen__"] == 1
    text = by_name["purpose"]
    assert text.texts is not None
    assert text.texts[:2] == ("buy a car", "pay the university tuition fees")
    assert len(text.texts[2]) == 1000  # long texts are cut
    assert text.values is not None
    assert text.values.tolist()[:2] == [3.0, 5.0]
    # Absent features count every row as missing.
    assert by_name["loan_amount"].n_missing == 4


def test_predictions_enter_their_own_window(profile: Profile) -> None:
    validator, windows = _windows(profile)
    stats = ModelStats(profile, validator.checks)
    assert stats.prediction is not None
    windows.observe_predictions(stats.prediction.observe([0.1, 0.2, None]))
    snap = windows.snapshot()
    assert snap.prediction is not None
    assert snap.prediction.values is not None
    assert snap.prediction.values.tolist() == [0.1, 0.2]
    assert snap.prediction.n_missing == 1


def test_memory_is_bounded_whatever_the_traffic(profile: Profile) -> None:
    validator, windows = _windows(profile, rows=100)
    batch = Batch(64, {"age": [33] * 64, "employment": ["employed"] * 64, "purpose": ["a b"] * 64})
    report = validator.validate(batch)
    for _ in range(2):  # fill every window past its 100 rows
        windows.observe_inputs(report.columns, batch.columns)
    first = windows.nbytes
    for _ in range(50):
        windows.observe_inputs(report.columns, batch.columns)
    assert windows.nbytes == first
    snap = windows.snapshot()
    assert all(f.n_rows == 100 for f in snap.features)


@pytest.mark.parametrize("rows", [1, 7])
def test_snapshots_are_copies(profile: Profile, rows: int) -> None:
    validator, windows = _windows(profile)
    batch = Batch(rows, {"age": [30] * rows})
    windows.observe_inputs(validator.validate(batch).columns, batch.columns)
    snap = windows.snapshot()
    windows.observe_inputs(validator.validate(Batch(1, {"age": [99]})).columns, {"age": [99]})
    age = next(f for f in snap.features if f.name == "age")
    assert age.values is not None
    assert age.values.tolist() == [30.0] * rows
