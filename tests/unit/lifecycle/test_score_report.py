"""Scoring the Monitoring section with and without Prometheus's alert rules."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from app.lifecycle.score_report import combine, render


def monitor(i: int, automated: bool, alerts: list[str]) -> dict[str, Any]:
    return {
        "monitor": i,
        "test": f"test {i}",
        "automated": automated,
        "state": "ok" if automated else "no_data",
        "detail": "d",
        "alerts": alerts,
    }


REPORT = {
    "monitors": [
        monitor(1, True, ["A"]),
        monitor(2, True, ["B", "C"]),
        monitor(3, False, ["D"]),
    ]
}


def test_without_prometheus_every_automated_monitor_scores_one() -> None:
    result = combine(REPORT, None)
    assert [m["points"] for m in result["monitors"]] == [1.0, 1.0, 0.0]
    assert result["score"] == 2.0
    assert not result["prometheus_checked"]


def test_missing_alert_rules_halve_the_points() -> None:
    result = combine(REPORT, {"A", "B", "D"})
    assert [m["points"] for m in result["monitors"]] == [1.0, 0.5, 0.0]
    assert result["monitors"][1]["alerts_missing"] == ["C"]
    assert result["score"] == 1.5
    out = io.StringIO()
    render(result, Console(file=out, width=200))
    text = out.getvalue()
    assert "1.5 / 3" in text
    assert "alert rules not loaded: C" in text
