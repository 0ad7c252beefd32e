"""Monitor 1's state follows the version-change alert's hour."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from app.lifecycle.ml_test_score import DeploymentView, ModelView, evaluate
from app.lifecycle.versions import VersionTracker
from app.monitoring.profile import Profile
from app.telemetry.lifecycle_metrics import LifecycleMetrics
from app.telemetry.metrics import Metrics


def test_a_version_change_alerts_for_an_hour(profile: Profile) -> None:
    registry = CollectorRegistry()
    tracker = VersionTracker(
        "loan", "v1", "h", Metrics(registry), LifecycleMetrics(registry), configured=None
    )
    tracker.seen("v1")
    tracker.seen("v2")
    tracker.seen("v1")  # a rollback: back to the profile's version
    assert tracker.changes == 2
    assert tracker.changed_at is not None
    view = ModelView("loan", profile, None, tracker)

    def state(now: float) -> str:
        return evaluate(DeploymentView(models=[view], now=now))[0].state

    assert state(time.time()) == "alerting"
    assert state(tracker.changed_at + 3599) == "alerting"
    assert state(tracker.changed_at + 3600) == "ok"
