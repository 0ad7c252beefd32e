"""`infersight ml-test-score`: the sidecar's view of Monitors 1-7 plus what only Prometheus knows
(which alert rules are loaded), printed as a table with the Monitoring section's score."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from app.errors import ConfigError

TIMEOUT_SECONDS = 10.0


def fetch_json(url: str, token: str | None = None) -> Any:
    """GET a JSON document.

    Raises:
        ConfigError: the URL cannot be reached or does not answer JSON.
    """
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"cannot reach {url}: {exc}") from None
    except json.JSONDecodeError:
        raise ConfigError(f"{url} did not answer JSON") from None


def loaded_alerts(prometheus_url: str) -> set[str]:
    """Names of the alerting rules Prometheus has loaded (its `/api/v1/rules` API)."""
    doc = fetch_json(prometheus_url.rstrip("/") + "/api/v1/rules?type=alert")
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise ConfigError(f"{prometheus_url} did not answer a Prometheus rules document")
    names: set[str] = set()
    for group in doc.get("data", {}).get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("type") == "alerting" and isinstance(rule.get("name"), str):
                names.add(rule["name"])
    return names


def combine(report: dict[str, Any], alerts: set[str] | None) -> dict[str, Any]:
    """The sidecar's report with each monitor's points: 1 automated (and, when Prometheus was
    asked, its alert rules loaded), 0.5 automated without its alerts, 0 otherwise."""
    monitors = []
    total = 0.0
    for m in report["monitors"]:
        wanted = set(m["alerts"])
        missing = sorted(wanted - alerts) if alerts is not None else []
        if not m["automated"]:
            points = 0.0
        elif alerts is None or not missing:
            points = 1.0
        else:
            points = 0.5
        total += points
        monitors.append({**m, "points": points, "alerts_missing": missing})
    return {
        "monitors": monitors,
        "score": total,
        "max_score": len(monitors),
        "prometheus_checked": alerts is not None,
    }


def render(result: dict[str, Any], console: Console) -> None:
    """Print the per-monitor table and the score."""
    table = Table(title="ML Test Score: monitoring tests for this deployment")
    for col in ("#", "test", "automated", "state", "points", "detail"):
        table.add_column(col, overflow="fold")
    for m in result["monitors"]:
        state = m["state"]
        color = {"ok": "green", "alerting": "red"}.get(state, "yellow")
        detail = m["detail"]
        if m["alerts_missing"]:
            detail += f" — alert rules not loaded: {', '.join(m['alerts_missing'])}"
        table.add_row(
            str(m["monitor"]),
            m["test"],
            "yes" if m["automated"] else "no",
            f"[{color}]{state}[/{color}]",
            f"{m['points']:g}",
            detail,
        )
    console.print(table)
    note = "" if result["prometheus_checked"] else " (alert rules not checked: no --prometheus)"
    console.print(
        f"Monitoring section score: [bold]{result['score']:g} / {result['max_score']}[/bold]"
        f"{note}. The paper's final ML Test Score is the minimum over its four sections."
    )
