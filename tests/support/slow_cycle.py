"""A drift cycle made slow on purpose with work that holds the GIL throughout: `sum` over a
range runs in C without ever releasing it, so a thread doing this would freeze the event loop."""

from __future__ import annotations

import time

from app.monitoring.drift_scheduler import run_cycle
from app.monitoring.drift_types import ModelDriftReport, ModelSnapshot

BUSY_SECONDS = 1.5


def busy_cycle(snapshots: list[ModelSnapshot]) -> list[ModelDriftReport]:
    deadline = time.monotonic() + BUSY_SECONDS
    while time.monotonic() < deadline:
        sum(range(3_000_000))
    return run_cycle(snapshots)
