"""Drift cycle time for 50 numeric features x 5,000-row windows (goal: under 250 ms).

Reports the snapshot (on the event loop), the evaluation alone (in this process), and a full
cycle through the worker process the sidecar uses.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import numpy as np

from app.monitoring.batch import Batch
from app.monitoring.drift import evaluate
from app.monitoring.drift_scheduler import DriftScheduler
from app.monitoring.drift_types import DriftConfig
from app.monitoring.profile import ModelInfo
from app.monitoring.profile_builder import BuildOptions, build_profile
from app.monitoring.serving_stats import ModelStats
from app.monitoring.validator import Validator
from app.monitoring.windows import ModelWindows

FEATURES = 50
ROWS = 5000


def setup() -> tuple[object, ModelWindows]:
    rng = np.random.default_rng(0)
    train = {f"f{i:02d}": rng.normal(i, 1 + i % 5, 20_000).tolist() for i in range(FEATURES)}
    profile, _ = build_profile(
        train, dict.fromkeys(train, "float64"), target=None, model=ModelInfo(name="bench"),
        data_hash="bench", options=BuildOptions(calibration_rows=0),
    )  # fmt: skip
    validator = Validator(profile)
    stats = ModelStats(profile, validator.checks)
    windows = ModelWindows("bench", validator.checks, None, rows=ROWS)
    serve = {k: (np.asarray(v[:ROWS]) + 0.05).tolist() for k, v in train.items()}
    for start in range(0, ROWS, 500):
        batch = Batch(500, {k: v[start : start + 500] for k, v in serve.items()})
        windows.observe_inputs(validator.validate(batch).columns, batch.columns)
    del stats
    return profile, windows


async def through_worker(profile: object, windows: ModelWindows, rounds: int) -> list[float]:
    times: list[float] = []
    scheduler = DriftScheduler(
        {"bench": windows}, {"bench": profile}, DriftConfig(), 3600, 60,  # type: ignore[dict-item]
        on_cycle=times.append, on_error=lambda: None,
    )  # fmt: skip
    await scheduler.run_cycle()  # the first cycle starts the worker and imports scipy
    times.clear()
    for _ in range(rounds):
        assert await scheduler.run_cycle()
    await scheduler.stop()
    return times


def main() -> int:
    profile, windows = setup()
    snaps = []
    for _ in range(10):
        t0 = time.perf_counter()
        snap = windows.snapshot()
        snaps.append(time.perf_counter() - t0)
    evals = []
    for _ in range(5):
        t0 = time.perf_counter()
        report = evaluate(profile, snap, DriftConfig())  # type: ignore[arg-type]
        evals.append(time.perf_counter() - t0)
    full = asyncio.run(through_worker(profile, windows, 5))
    drifted = sum(1 for f in report.features if f.drift)
    print(f"drift cycle, {FEATURES} numeric features x {ROWS:,} rows (medians)")
    print(f"  snapshot on the event loop  {statistics.median(snaps) * 1000:7.1f} ms")
    print(f"  evaluation (in process)     {statistics.median(evals) * 1000:7.1f} ms")
    print(
        f"  full cycle via the worker   {statistics.median(full) * 1000:7.1f} ms  (goal < 250 ms)"
    )
    print(
        f"  window memory               {windows.nbytes / 2**20:7.1f} MiB; features drifting: {drifted}"
    )
    return 0 if statistics.median(full) < 0.25 else 1


if __name__ == "__main__":
    sys.exit(main())
