"""Build the three InferSight dashboards (stdlib only, deterministic output).

    python grafana/build_dashboards.py          # (re)write grafana/dashboards/*.json
    python grafana/build_dashboards.py --check  # exit 1 when a committed file differs

The JSON files are committed (Grafana provisions them as they are); this script is their
source. Panel ids are stable: alert rules link to `/d/<uid>?viewPanel=<id>` (see
`ALERT_PANELS`), so renumbering a panel breaks those links. Queries use only metric names from
README's metric reference and, in the Requests dashboard, only fields of the request log line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

PROM = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}
SCHEMA_VERSION = 39
TAGS = ["infersight"]

RI = "$__rate_interval"
M = 'model="$model"'  # Model dashboard: one model
MS = 'model=~"$model"'  # Service and Requests dashboards: several models
F = 'feature=~"$feature"'
PRED = 'feature="__prediction__"'
AGREE = 'result="agree"'

# Request log (README "Request log"): the stream the log shipper labels, and the event name.
LOG_STREAM = '{app="infersight"}'
REQUEST_EVENT = 'event="request.completed"'
# Violation kinds a profile feature can have in a log line's `violations` ({kind: {feature: n}}).
FEATURE_VIOLATION_KINDS = (
    "missing",
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "non_finite",
)

ALERT_PANELS: dict[str, tuple[str, int]] = {
    "InferSightDown": ("infersight-service", 4),
    "InferSightUpstreamUnavailable": ("infersight-service", 4),
    "InferSightHighErrorRate": ("infersight-service", 3),
    "InferSightHighLatency": ("infersight-service", 11),
    "InferSightMemoryGrowth": ("infersight-service", 22),
    "InferSightFeatureDrift": ("infersight-model", 25),
    "InferSightMissingValuesSpike": ("infersight-model", 33),
    "InferSightUnseenCategories": ("infersight-model", 34),
    "InferSightValidationRejections": ("infersight-model", 32),
    "InferSightPredictionDrift": ("infersight-model", 17),
    "InferSightPredictionMeanShift": ("infersight-model", 11),
    "InferSightQualityDrop": ("infersight-model", 41),
    "InferSightModelStale": ("infersight-model", 3),
    "InferSightModelVersionChanged": ("infersight-model", 7),
    "InferSightNonFinitePredictions": ("infersight-model", 5),
    "InferSightShadowDisagreement": ("infersight-model", 43),
    "InferSightLogRecordsDropped": ("infersight-service", 31),
    "InferSightMonitoringErrors": ("infersight-service", 31),
    "InferSightParityMismatch": ("infersight-model", 49),
}
"""The panel each alert's `dashboard_url` annotation opens: `/d/<uid>?viewPanel=<id>`."""


# --- queries ----------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "") -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }
    if fmt:
        target["format"] = fmt
    return target


def loki(expr: str, legend: str = "", *, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": LOKI,
        "editorMode": "code",
        "expr": expr,
        "queryType": "instant" if instant else "range",
    }
    if legend:
        target["legendFormat"] = legend
    return target


def not_empty(label: str) -> str:
    return f'{label} != ""'


def matcher(label: str, value: str) -> str:
    """`label="value"`."""
    return f'{label}="{value}"'


def sel(metric: str, *matchers: str) -> str:
    """`metric{m1, m2}` (just `metric` without matchers)."""
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def rate(selector: str, window: str = RI, fn: str = "rate") -> str:
    return f"{fn}({selector}[{window}])"


def sum_rate(selector: str, by: str = "", window: str = RI, fn: str = "rate") -> str:
    """The rate (or increase) summed over replicas, optionally by some labels."""
    group = f" by ({by}) " if by else ""
    return f"sum{group}({rate(selector, window, fn)})"


def share(by: str, counter: str, window: str = RI, fn: str = "rate") -> str:
    """Each `by` group's share of the counter's total (summed over replicas)."""
    return (
        f"{sum_rate(counter, by, window, fn)}"
        f" / ignoring ({by}) group_left {sum_rate(counter, '', window, fn)}"
    )


def quantile(q: float, histogram: str, selector: str = "", by: str = "le", window: str = RI) -> str:
    bucket = sel(f"{histogram}_bucket", selector) if selector else f"{histogram}_bucket"
    return f"histogram_quantile({q}, {sum_rate(bucket, by, window)})"


def sidecar_only(expr: str) -> str:
    """process_* series of the sidecar targets only (not Prometheus' or the model server's)."""
    return f"{expr} and on (instance, job) infersight_upstream_up"


def request_log(*fields: str, where: str = "") -> str:
    """Request-log lines, their named fields extracted with `| json field="field"`."""
    extract = ", ".join(f'{f}="{f}"' for f in fields)
    query = f"{LOG_STREAM} | json {extract} | {REQUEST_EVENT} | {MS}"
    return f"{query} | {where}" if where else query


# --- panels -----------------------------------------------------------------------------------


def panel(
    pid: int,
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    description: str,
    unit: str = "",
    w: int = 12,
    h: int = 8,
    options: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    transformations: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    repeat: str = "",
) -> dict[str, Any]:
    for ref, target in zip("ABCDEFGHIJ", targets, strict=False):
        target["refId"] = ref
    field_defaults: dict[str, Any] = dict(defaults or {})
    if unit:
        field_defaults["unit"] = unit
    p: dict[str, Any] = {
        "datasource": targets[0]["datasource"],
        "description": description,
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "id": pid,
        "options": options or {},
        "targets": targets,
        "title": title,
        "type": kind,
    }
    if transformations:
        p["transformations"] = transformations
    if links:
        p["links"] = links
    if repeat:
        p.update({"maxPerRow": 3, "repeat": repeat, "repeatDirection": "h"})
    return p


LEGEND = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
TABLE_LEGEND = {
    "calcs": ["lastNotNull", "max"],
    "displayMode": "table",
    "placement": "right",
    "showLegend": True,
}


def timeseries(
    pid: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    description: str,
    unit: str = "short",
    stacked: bool = False,
    log_scale: bool = False,
    legend: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "fillOpacity": 25 if stacked else 0,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
    }
    if stacked:
        custom["stacking"] = {"group": "A", "mode": "normal"}
    if log_scale:
        custom["scaleDistribution"] = {"log": 10, "type": "log"}
    return panel(
        pid,
        "timeseries",
        title,
        targets,
        description=description,
        unit=unit,
        options={"legend": legend or LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}},
        defaults={"custom": custom},
        overrides=overrides,
        **kw,
    )


def stat(
    pid: int,
    title: str,
    targets: list[dict[str, Any]],
    *,
    description: str,
    unit: str = "short",
    text_mode: str = "value_and_name",
    color_mode: str = "background",
    mappings: list[dict[str, Any]] | None = None,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    w: int = 6,
    h: int = 4,
    **kw: Any,
) -> dict[str, Any]:
    return panel(
        pid,
        "stat",
        title,
        targets,
        description=description,
        unit=unit,
        w=w,
        h=h,
        options={
            "colorMode": color_mode,
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
        },
        defaults={
            "mappings": mappings or [],
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": c, "value": v} for v, c in thresholds],
            },
        },
        **kw,
    )


def bars_vs_reference(
    pid: int, title: str, serving: str, reference: str, *, description: str, **kw: Any
) -> dict[str, Any]:
    """A bar chart of per-bin shares (instant queries over the range) beside the reference."""
    return panel(
        pid,
        "barchart",
        title,
        [
            prom(serving, "serving", instant=True, fmt="table"),
            prom(reference, "reference", instant=True, fmt="table"),
        ],
        description=description,
        unit="percentunit",
        options={
            "barWidth": 0.9,
            "groupWidth": 0.8,
            "legend": LEGEND,
            "orientation": "auto",
            "showValue": "never",
            "tooltip": {"mode": "multi", "sort": "none"},
            "xField": "bin",
        },
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value #A": "serving share", "Value #B": "reference share"},
                },
            },
            {"id": "sortBy", "options": {"sort": [{"field": "bin"}]}},
        ],
        **kw,
    )


def logs(pid: int, title: str, expr: str, *, description: str, **kw: Any) -> dict[str, Any]:
    return panel(
        pid,
        "logs",
        title,
        [loki(expr)],
        description=description,
        options={
            "dedupStrategy": "none",
            "enableLogDetails": True,
            "prettifyLogMessage": False,
            "showTime": True,
            "sortOrder": "Descending",
            "wrapLogMessage": True,
        },
        **kw,
    )


def row(pid: int, title: str) -> dict[str, Any]:
    return {
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "id": pid,
        "panels": [],
        "title": title,
        "type": "row",
    }


def dashed(ref: str, color: str = "text") -> dict[str, Any]:
    """Draw a reference series (by query) as a dashed line."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}},
        ],
    }


def state_mapping(ok: str, bad: str, ok_value: int = 0) -> list[dict[str, Any]]:
    bad_value = 1 - ok_value
    return [
        {
            "options": {
                str(ok_value): {"color": "green", "index": 0, "text": ok},
                str(bad_value): {"color": "red", "index": 1, "text": bad},
            },
            "type": "value",
        }
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; rows start a new line."""
    x = y = line_height = 0
    for p in panels:
        pos = p["gridPos"]
        if p["type"] == "row" or x + pos["w"] > 24:
            y += line_height
            x = line_height = 0
        pos["x"], pos["y"] = x, y
        if p["type"] == "row":
            y += 1
            continue
        x += pos["w"]
        line_height = max(line_height, pos["h"])
    return panels


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> dict[str, Any]:
    return {
        "current": {},
        "datasource": PROM,
        "definition": query,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    *,
    alerts_annotation: bool = True,
) -> dict[str, Any]:
    annotations = []
    if alerts_annotation:
        annotations.append(
            {
                "datasource": PROM,
                "enable": True,
                "expr": 'ALERTS{alertname=~"InferSight.*", alertstate="firing"}',
                "iconColor": "red",
                "name": "InferSight alerts",
                "step": "60s",
                "textFormat": "{{model}} {{feature}}",
                "titleFormat": "{{alertname}}",
            }
        )
    return {
        "annotations": {"list": annotations},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": TAGS,
                "targetBlank": False,
                "title": "InferSight",
                "type": "dashboards",
            }
        ],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
    }


def link(title: str, uid: str) -> dict[str, Any]:
    """A panel link to another InferSight dashboard, keeping the time range and model."""
    return {"title": title, "url": f"/d/{uid}?${{__url_time_range}}&var-model=${{model}}"}


# --- InferSight / Service ---------------------------------------------------------------------


def service() -> dict[str, Any]:
    req, up = "infersight_request_duration_seconds", "infersight_upstream_duration_seconds"
    requests = sel("infersight_requests_total", MS)
    latency = []
    for q in (0.5, 0.95, 0.99):
        latency.append(prom(quantile(q, req, MS), f"sidecar p{round(q * 100)}"))
        latency.append(prom(quantile(q, up, MS), f"upstream p{round(q * 100)}"))

    def status_share(status: str) -> str:
        errors = sel("infersight_requests_total", MS, f'status="{status}"')
        return f"{sum_rate(errors, 'model')} / {sum_rate(requests, 'model')}"

    panels = [
        row(1, "Traffic and errors"),
        timeseries(
            2,
            "Request rate by status",
            [prom(sum_rate(requests, "model, status"), "{{model}} {{status}}")],
            description="Inference requests answered by the sidecar, by model and status class.",
            unit="reqps",
            stacked=True,
            w=9,
        ),
        timeseries(
            3,
            "Error ratio",
            [
                prom(status_share("5xx"), "{{model}} 5xx"),
                prom(status_share("4xx"), "{{model}} 4xx"),
            ],
            description=(
                "Share of requests answered 5xx (model server unreachable, failing or too slow:"
                " the error-rate alert) and 4xx (rejected by validation or by the model server)."
            ),
            unit="percentunit",
            w=9,
        ),
        stat(
            4,
            "Upstream up",
            [prom("min by (instance) (infersight_upstream_up)", "{{instance}}")],
            description=(
                "Per sidecar replica: 1 when the model server answered its readiness probe."
                " No value at all: Prometheus cannot scrape the sidecar."
            ),
            mappings=state_mapping("up", "DOWN", ok_value=1),
            thresholds=[(None, "red"), (1, "green")],
            w=6,
            h=8,
        ),
        timeseries(
            5,
            "Rejected requests by reason",
            [
                prom(
                    sum_rate(sel("infersight_rejected_requests_total", MS), "model, reason"),
                    "{{model}} {{reason}}",
                )
            ],
            description=(
                "Answered by the sidecar and never forwarded: decode (undecodable body),"
                " enforce (a row broke an enforce policy), too_large."
            ),
            unit="reqps",
        ),
        timeseries(
            6,
            "Rows per second",
            [
                prom(sum_rate(sel("infersight_rows_total", MS), "model"), "{{model}} rows"),
                prom(
                    sum_rate(sel("infersight_rejected_rows_total", MS), "model"),
                    "{{model}} rejected rows",
                ),
            ],
            description="Rows decoded from requests, and rows of rejected requests.",
        ),
        row(10, "Latency"),
        timeseries(
            11,
            "Latency p50 / p95 / p99: sidecar vs upstream",
            latency,
            description=(
                "Sidecar: request to response, what clients see. Upstream: waiting for the model"
                " server. The gap between them is what the sidecar adds."
            ),
            unit="s",
        ),
        timeseries(
            12,
            "Mean time added by the sidecar",
            [
                prom(
                    f"({sum_rate(sel(f'{req}_sum', MS))} - {sum_rate(sel(f'{up}_sum', MS))})"
                    f" / {sum_rate(sel(f'{req}_count', MS))}",
                    "sidecar - upstream, per request",
                )
            ],
            description=(
                "Mean sidecar time minus mean upstream time per request (rejected requests never"
                " reach the model server and count with their whole time)."
            ),
            unit="s",
            w=6,
        ),
        timeseries(
            13,
            "Upstream calls by outcome",
            [prom(sum_rate(sel(f"{up}_count", MS), "outcome"), "{{outcome}}")],
            description=(
                "ok, error_status (the model server's own 4xx/5xx), unavailable, timeout,"
                " bad_response."
            ),
            unit="reqps",
            stacked=True,
            w=6,
        ),
        timeseries(
            14,
            "p99 latency per model",
            [prom(quantile(0.99, req, MS, by="model, le"), "{{model}}")],
            description="Sidecar p99 per model: the high-latency alert's view.",
            unit="s",
            w=24,
            h=6,
        ),
        row(20, "Resources"),
        timeseries(
            21,
            "CPU",
            [prom(sidecar_only(rate("process_cpu_seconds_total")), "{{instance}}")],
            description="CPU seconds per second (cores) used by each sidecar process.",
            w=8,
        ),
        timeseries(
            22,
            "Memory: RSS vs limit",
            [
                prom(sidecar_only("process_resident_memory_bytes"), "{{instance}} RSS"),
                prom("infersight_memory_limit_bytes", "{{instance}} limit"),
                prom(
                    sidecar_only("predict_linear(process_resident_memory_bytes[1h], 4 * 3600)"),
                    "{{instance}} RSS in 4 h (1 h linear trend)",
                ),
                prom(
                    "sum by (instance) (infersight_drift_window_bytes)",
                    "{{instance}} drift windows",
                ),
            ],
            description=(
                "Resident memory of each sidecar against its limit (cgroup or configured; 0 when"
                " unknown), the linear trend a slow leak shows as, and the memory held by drift"
                " windows."
            ),
            unit="bytes",
            w=10,
            overrides=[dashed("B", "red"), dashed("C", "orange")],
        ),
        timeseries(
            23,
            "Open file descriptors",
            [prom(sidecar_only("process_open_fds"), "{{instance}}")],
            description="Open file descriptors of each sidecar process (connections, log sink).",
            w=6,
        ),
        row(30, "Background work"),
        timeseries(
            31,
            "Log lines dropped, monitoring errors",
            [
                prom(
                    sum_rate("infersight_log_records_dropped_total", "instance"),
                    "{{instance}} log lines dropped",
                ),
                prom(
                    sum_rate("infersight_monitoring_errors_total", "instance, model, stage"),
                    "{{instance}} {{model}} monitoring errors ({{stage}})",
                ),
            ],
            description=(
                "Request-log lines dropped because the bounded queue was full or the sink failed"
                " (requests are never delayed by the log, they lose their line instead), and"
                " requests whose monitoring failed on a sidecar bug: `check` ones were forwarded"
                " unchecked, `observe` ones answered but not observed."
            ),
            unit="suffix: /s",
            w=8,
        ),
        timeseries(
            32,
            "Drift cycle time",
            [
                prom(quantile(0.5, "infersight_drift_cycle_seconds", window="5m"), "p50"),
                prom(quantile(0.99, "infersight_drift_cycle_seconds", window="5m"), "p99"),
                prom(
                    f"{sum_rate('infersight_drift_cycle_seconds_sum', window='5m')}"
                    f" / {sum_rate('infersight_drift_cycle_seconds_count', window='5m')}",
                    "mean",
                ),
            ],
            description=(
                "Wall time of a drift cycle (window snapshot to report) over 5 minutes: cycles"
                " run once per drift.interval_seconds, too rarely for a shorter rate window."
            ),
            unit="s",
            w=8,
        ),
        timeseries(
            33,
            "Drift cycles and errors",
            [
                prom(
                    sum_rate("infersight_drift_cycle_seconds_count", window="5m", fn="increase"),
                    "cycles per 5 min",
                ),
                prom(
                    sum_rate("infersight_drift_cycle_errors_total", window="5m", fn="increase"),
                    "failed or timed out per 5 min",
                ),
            ],
            description=(
                "Completed drift cycles, and cycles that failed or ran past"
                " drift.cycle_timeout_seconds (their worker is replaced; requests never wait)."
            ),
            w=8,
            overrides=[dashed("B", "red")],
        ),
        row(40, "ML Test Score (monitoring tests)"),
        stat(
            41,
            "Automated monitors",
            [
                prom(
                    "min by (monitor, test) (infersight_ml_test_monitor_automated)",
                    "{{monitor}}. {{test}}",
                )
            ],
            description=(
                "ML Test Score Monitors 1-7: automated here when configured and receiving data"
                " on every replica (GET /monitoring/ml-test-score; `infersight ml-test-score"
                " --prometheus` adds the alert rules loaded and prints the score)."
            ),
            mappings=state_mapping("automated", "not automated", ok_value=1),
            thresholds=[(None, "red"), (1, "green")],
            w=12,
            h=8,
        ),
        stat(
            42,
            "Monitor state",
            [
                prom(
                    "min by (monitor, test) (infersight_ml_test_monitor_ok)",
                    "{{monitor}}. {{test}}",
                )
            ],
            description="Each automated monitor's current state: ok, or alerting on a replica.",
            mappings=state_mapping("ok", "alerting", ok_value=1),
            thresholds=[(None, "red"), (1, "green")],
            w=12,
            h=8,
        ),
    ]
    model_var = query_variable(
        "model", "Model", "label_values(infersight_requests_total, model)", multi=True
    )
    model_var["allValue"] = ".*"
    return dashboard(
        "infersight-service",
        "InferSight / Service",
        "The sidecar as a service: traffic, errors, latency against the model server, resources.",
        panels,
        [model_var],
    )


# --- InferSight / Model -----------------------------------------------------------------------


def model() -> dict[str, Any]:
    count = sum_rate(sel("infersight_prediction_count", M), "output")
    mean = f"{sum_rate(sel('infersight_prediction_sum', M), 'output')} / {count}"
    squares = sum_rate(sel("infersight_prediction_squares_total", M), "output")
    ref_stat = "infersight_reference_prediction_stat"
    ref_mean = f"max by (output) ({sel(ref_stat, M, matcher('stat', 'mean'))})"
    ref_std = f"max by (output) ({sel(ref_stat, M, matcher('stat', 'std'))})"
    # sum((x - ref mean)^2) / n - (mean - ref mean)^2 is the variance around the mean itself.
    std = f"sqrt(clamp_min({squares} / {count} - ({mean} - {ref_mean}) ^ 2, 0))"

    def window(stats: str) -> str:
        return f"avg by (output, stat) ({sel('infersight_prediction_window', M, stats)})"

    def feature_share(bin_name: str) -> str:
        part = sel("infersight_feature_bin_total", M, F, f'bin="{bin_name}"')
        whole = sel("infersight_feature_bin_total", M, F)
        return f"{sum_rate(part, 'feature')} / {sum_rate(whole, 'feature')}"

    band_line = [
        {"id": "custom.lineWidth", "value": 0},
        {"id": "color", "value": {"fixedColor": "text", "mode": "fixed"}},
    ]
    band = [
        {
            "matcher": {"id": "byName", "options": "reference mean + 1 std"},
            "properties": [
                {"id": "custom.fillBelowTo", "value": "reference mean - 1 std"},
                {"id": "custom.fillOpacity", "value": 15},
                *band_line,
            ],
        },
        {"matcher": {"id": "byName", "options": "reference mean - 1 std"}, "properties": band_line},
        dashed("C"),
    ]

    def fleet_psi(pid: int, window: str) -> dict[str, Any]:
        rule = "model_feature:infersight_feature_psi{}:" + window
        return timeseries(
            pid,
            f"Fleet-wide PSI per feature vs critical value and floor ({window})",
            [
                prom(sel(rule.format(""), M, F), "{{feature}} PSI"),
                prom(sel(rule.format("_critical"), M, F), "{{feature}} critical value"),
                prom(
                    sel("model_feature:infersight_feature_psi_floor:min", M, F), "{{feature}} floor"
                ),
            ],
            description=(
                f"The feature-drift alert's signal over {window} (recording rules, all replicas):"
                " it fires while a feature's PSI is above both the critical value for the"
                " window's size (dashed) and the feature's calibrated floor (red). Log scale."
            ),
            legend=TABLE_LEGEND,
            log_scale=True,
            overrides=[dashed("B"), dashed("C", "red")],
            h=9,
        )

    classes = sel("infersight_prediction_class_total", M)
    ref_bins = "infersight_reference_bin_ratio"
    pbins = sel("infersight_prediction_bin_total", M)
    violations = sel("infersight_validation_violations_total", M, F)
    rows = sel("infersight_rows_total", M)
    to_requests = [link("Requests with violations", "infersight-requests")]
    panels = [
        row(1, "Model"),
        stat(
            2,
            "Model version",
            [prom(f"max by (version) ({sel('infersight_model_info', M)})", "{{version}}")],
            description="The model version of the profile in force (several: replicas differ).",
            text_mode="name",
            color_mode="none",
            w=4,
        ),
        stat(
            3,
            "Model age",
            [
                prom(
                    f"time() - max({sel('infersight_model_trained_timestamp_seconds', M)})",
                    "since training",
                )
            ],
            description="Time since the model was trained (the profile's model.trained_at).",
            unit="dtdurations",
            color_mode="none",
            w=5,
        ),
        stat(
            4,
            "Profile age",
            [
                prom(
                    f"time() - max({sel('infersight_profile_created_timestamp_seconds', M)})",
                    "since profile build",
                )
            ],
            description="Time since the reference profile was built.",
            unit="dtdurations",
            color_mode="none",
            w=5,
        ),
        stat(
            5,
            "Non-finite predictions",
            [
                prom(
                    sum_rate(
                        sel("infersight_prediction_non_finite_total", M), "", "$__range", "increase"
                    ),
                    "NaN/Inf in range",
                )
            ],
            description="NaN or infinite predictions in the selected time range (any is a bug).",
            thresholds=[(None, "green"), (1, "red")],
            w=4,
        ),
        stat(
            6,
            "Rows per second",
            [
                prom(sum_rate(rows), "rows"),
                prom(sum_rate(sel("infersight_rejected_rows_total", M)), "rejected"),
            ],
            description="Rows decoded from requests, and rows of rejected requests.",
            color_mode="none",
            w=6,
        ),
        timeseries(
            7,
            "Replicas per model version",
            [
                prom(
                    f"count by (version, profile_hash) ({sel('infersight_model_info', M)})",
                    "{{version}} ({{profile_hash}})",
                )
            ],
            description=(
                "Sidecar replicas serving each model version and profile: a rollout shows as one"
                " series handing over to another (the version-change alert)."
            ),
            w=24,
            h=6,
        ),
        row(10, "Predictions"),
        timeseries(
            11,
            "Prediction mean, median, min, max vs reference",
            [
                prom(mean, "mean (all replicas)"),
                prom(window('stat=~"mean|median|min|max"'), "window {{stat}}"),
                prom(ref_mean, "reference mean"),
                prom(f"{ref_mean} + {ref_std}", "reference mean + 1 std"),
                prom(f"{ref_mean} - {ref_std}", "reference mean - 1 std"),
            ],
            description=(
                "Numeric outputs. The mean from the histogram counters over all replicas; window"
                " statistics over each replica's drift window (averaged over replicas); the band"
                " is the reference mean ± one reference std."
            ),
            overrides=band,
            w=14,
            h=9,
        ),
        timeseries(
            12,
            "Prediction std vs reference",
            [
                prom(std, "std (all replicas)"),
                prom(window('stat="std"'), "window std"),
                prom(ref_std, "reference std"),
            ],
            description=(
                "Numeric outputs. The std from the counters (Σ(x - reference mean)² corrected for"
                " the shift of the mean), over each replica's window, and in the reference."
            ),
            overrides=[dashed("C")],
            w=10,
            h=9,
        ),
        bars_vs_reference(
            13,
            "Prediction histogram vs reference",
            share("bin", pbins, "$__range", "increase"),
            f"max by (bin) ({sel('infersight_reference_prediction_bin_ratio', M)})",
            description=(
                "Share of predictions per bin over the selected range (all replicas) against the"
                " reference. Numeric outputs: bins from the reference; categorical: classes."
            ),
            w=12,
            h=9,
        ),
        panel(
            14,
            "heatmap",
            "Prediction distribution over time",
            [prom(sum_rate(sel("infersight_prediction_bucket", M), "le"), "{{le}}", fmt="heatmap")],
            description=(
                "Numeric outputs: the prediction histogram (buckets at reference quantiles) over"
                " time."
            ),
            w=12,
            h=9,
            options={
                "calculate": False,
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "legend": {"show": True},
                "tooltip": {"show": True, "yHistogram": False},
                "yAxis": {"axisPlacement": "left"},
            },
        ),
        timeseries(
            15,
            "Predicted classes over time (bins for numeric outputs)",
            [
                prom(
                    f"({share('class', classes)})"
                    f" or (({share('bin', pbins)}) unless on () {classes})",
                    "{{class}}{{bin}}",
                )
            ],
            description=(
                "Share of predictions per class (categorical outputs) or per reference bin"
                " (numeric outputs) over time."
            ),
            unit="percentunit",
            stacked=True,
        ),
        timeseries(
            16,
            "Prediction drift score vs threshold",
            [
                prom(f"max by (method) ({sel('infersight_drift_score', M, PRED)})", "{{method}}"),
                prom(
                    f"max by (method) ({sel('infersight_drift_threshold', M, PRED)})",
                    "{{method}} threshold",
                ),
            ],
            description=(
                "The output's drift scores in the latest cycle (the largest over replicas) and,"
                " dashed, their thresholds (log scale: the tests' statistics differ in size)."
            ),
            log_scale=True,
            overrides=[dashed("B")],
        ),
        timeseries(
            17,
            "Fleet-wide prediction PSI vs critical value and floor",
            [
                prom(sel("model_output:infersight_prediction_psi:1h", M), "{{output}} PSI 1 h"),
                prom(
                    sel("model_output:infersight_prediction_psi_critical:1h", M),
                    "{{output}} critical value 1 h",
                ),
                prom(sel("model_output:infersight_prediction_psi:6h", M), "{{output}} PSI 6 h"),
                prom(
                    sel("model_output:infersight_prediction_psi_critical:6h", M),
                    "{{output}} critical value 6 h",
                ),
                prom(
                    sel("model_output:infersight_prediction_psi_floor:min", M), "{{output}} floor"
                ),
            ],
            description=(
                "The prediction-drift alert's signal (recording rules, all replicas): PSI of the"
                " prediction bins over 1 h and 6 h; it fires while PSI is above both its window's"
                " critical value (dashed) and the floor (red). Log scale."
            ),
            log_scale=True,
            overrides=[dashed("B"), dashed("D"), dashed("E", "red")],
            w=24,
            h=7,
        ),
        row(20, "Drift"),
        stat(
            21,
            "Drift verdict per feature",
            [
                prom(f"max by (feature) ({sel('infersight_drift_detected', M, F)})", "{{feature}}"),
                prom(f"max({sel('infersight_drift_detected', M, PRED)})", "prediction"),
            ],
            description=(
                "The latest cycle's verdict (any replica): a deciding test significant after"
                " correction and past its effect floor. No value: too few rows for a verdict."
            ),
            mappings=state_mapping("ok", "DRIFT"),
            thresholds=[(None, "green"), (1, "red")],
            w=24,
            links=to_requests,
        ),
        *(fleet_psi(pid, window) for pid, window in ((25, "1h"), (26, "6h"))),
        timeseries(
            22,
            "Drift score per feature and method",
            [
                prom(
                    f"max by (feature, method) ({sel('infersight_drift_score', M, F)})",
                    "{{feature}} {{method}}",
                ),
                prom(
                    f"max by (feature, method) ({sel('infersight_drift_threshold', M, F)})",
                    "{{feature}} {{method}} threshold",
                ),
            ],
            description=(
                "Each test's statistic in the latest cycle and, dashed, the threshold in force"
                " (floor or calibrated), log scale. Per-replica windows; the bin shares below are"
                " fleet-wide."
            ),
            log_scale=True,
            legend=TABLE_LEGEND,
            overrides=[dashed("B")],
            w=24,
            h=9,
        ),
        timeseries(
            23,
            "Drift test p-values",
            [
                prom(
                    f"min by (feature, test) ({sel('infersight_drift_pvalue', M, F)})",
                    "{{feature}} {{test}}",
                )
            ],
            description=(
                "Raw (uncorrected) p-values of the latest cycle on a log scale: lower is stronger"
                " evidence of drift."
            ),
            unit="none",
            log_scale=True,
            legend=TABLE_LEGEND,
            w=16,
        ),
        timeseries(
            24,
            "Drift window rows",
            [
                prom(
                    f"max by (feature) ({sel('infersight_drift_window_rows', M, F)})", "{{feature}}"
                )
            ],
            description="Values in each feature's window (no verdict below drift.min_rows).",
            w=8,
        ),
        row(30, "Inputs"),
        timeseries(
            31,
            "Violations by kind",
            [prom(sum_rate(violations, "kind"), "{{kind}}")],
            description="Rows with a violation per second by kind (every decoded row counts).",
            stacked=True,
            w=8,
            links=to_requests,
        ),
        timeseries(
            32,
            "Violation share by feature and kind",
            [
                prom(
                    f"{sum_rate(violations, 'feature, kind')}"
                    f" / ignoring (feature, kind) group_left {sum_rate(rows)}",
                    "{{feature}} {{kind}}",
                ),
                prom(
                    f"{sum_rate(sel('infersight_rejected_rows_total', M))} / {sum_rate(rows)}",
                    "rejected rows",
                ),
            ],
            description=(
                "Share of rows with each violation and, dashed, the share of rows rejected"
                " (the validation-rejections alert)."
            ),
            unit="percentunit",
            legend=TABLE_LEGEND,
            overrides=[dashed("B", "red")],
            w=16,
            links=to_requests,
        ),
        timeseries(
            33,
            "Missing share per feature vs reference",
            [
                prom(feature_share("__missing__"), "{{feature}}"),
                prom(
                    f"max by (feature) ({sel(ref_bins, M, F, matcher('bin', '__missing__'))})",
                    "{{feature}} reference",
                ),
            ],
            description="Share of values missing (all replicas) and, dashed, the training share.",
            unit="percentunit",
            overrides=[dashed("B")],
        ),
        timeseries(
            34,
            "Unseen share per feature",
            [prom(feature_share("__unseen__"), "{{feature}}")],
            description=(
                "Share of values never seen in training (new categories, wrong type,"
                " non-finite); the reference share is 0 by definition."
            ),
            unit="percentunit",
            links=to_requests,
        ),
        bars_vs_reference(
            35,
            "Bin shares vs reference: $feature",
            share("bin", sel("infersight_feature_bin_total", M, F), "$__range", "increase"),
            f"max by (bin) ({sel(ref_bins, M, F)})",
            description=(
                "The feature's share per bin over the selected range (all replicas) against its"
                " training share: the fleet-wide view the drift alerts are computed from."
            ),
            w=8,
            repeat="feature",
        ),
        row(40, "Ground truth, shadow and parity"),
        timeseries(
            41,
            "Quality from feedback (all replicas, last day)",
            [
                prom(
                    f"max by (metric) ({sel('model_metric:infersight_feedback_quality:1d', M)})",
                    "{{metric}}",
                ),
                prom(
                    "max by (metric) "
                    f"({sel('model_metric:infersight_model_quality_threshold:min', M)})",
                    "{{metric}} alert bound",
                ),
            ],
            description=(
                "Quality of the predictions whose ground truth arrived (POST /feedback) over the"
                " last day, from the counters of every replica: accuracy, log-loss and Brier for"
                " classifiers, MAE, RMSE and bias for regression; dashed: feedback.thresholds,"
                " the bound of InferSightQualityDrop."
            ),
            w=8,
            overrides=[dashed("B", "red")],
        ),
        timeseries(
            42,
            "Feedback by outcome",
            [prom(sum_rate(sel("infersight_feedback_total", M), "outcome"), "{{outcome}}")],
            description=(
                "Labels matched to a stored prediction, unknown (never seen, or evicted),"
                " duplicate, expired (older than feedback.ttl_seconds) or invalid."
            ),
            unit="suffix: labels/s",
            w=8,
        ),
        timeseries(
            47,
            "Quality window (each replica)",
            [
                prom(
                    f"max by (instance, metric) ({sel('infersight_model_quality', M)})",
                    "{{instance}} {{metric}}",
                )
            ],
            description=(
                "Each replica's quality over its last feedback.window_rows labelled predictions"
                " (a diagnostic; the fleet's value is on the left)."
            ),
            w=8,
        ),
        bars_vs_reference(
            48,
            "Calibration: positive share vs predicted probability",
            f"sum by (bin) (increase({sel('infersight_feedback_calibration_positives_total', M)}"
            "[$__range])) / (sum by (bin) (increase("
            f"{sel('infersight_feedback_calibration_rows_total', M)}[$__range])) > 0)",
            f"sum by (bin) (increase({sel('infersight_feedback_calibration_predicted_total', M)}"
            "[$__range])) / (sum by (bin) (increase("
            f"{sel('infersight_feedback_calibration_rows_total', M)}[$__range])) > 0)",
            description=(
                "Reliability bins of probability outputs over the range: of the predictions in"
                " each bin (by upper edge), the share whose label was positive ('serving') against"
                " their mean predicted probability ('reference'). A calibrated model has equal"
                " bars."
            ),
            w=8,
        ),
        timeseries(
            43,
            "Shadow agreement",
            [
                prom(
                    f"{sum_rate(sel('infersight_shadow_comparisons_total', M, AGREE))}"
                    f" / ({sum_rate(sel('infersight_shadow_comparisons_total', M))} > 0)",
                    "agreeing rows",
                )
            ],
            description=(
                "Share of mirrored rows where the shadow candidate agrees with the model (classes"
                " equal, numbers within shadow.tolerance); InferSightShadowDisagreement fires below"
                " 95 % over an hour."
            ),
            unit="percentunit",
            w=8,
        ),
        timeseries(
            44,
            "Shadow requests by outcome",
            [
                prom(
                    sum_rate(sel("infersight_shadow_requests_total", M), "outcome"),
                    "{{outcome}}",
                ),
                prom(sum_rate(sel("infersight_shadow_dropped_total", M)), "dropped (queue full)"),
            ],
            description=(
                "Mirrored requests by the shadow's outcome, and those dropped because the shadow"
                " queue was full: the model's own requests are never affected."
            ),
            unit="reqps",
            w=8,
        ),
        timeseries(
            45,
            "Shadow vs model latency (p99)",
            [
                prom(quantile(0.99, "infersight_shadow_duration_seconds", M), "shadow"),
                prom(
                    quantile(0.99, "infersight_upstream_duration_seconds", f'{M},outcome="ok"'),
                    "model",
                ),
            ],
            description="99th percentile latency of the shadow candidate and of the model.",
            unit="s",
            w=8,
        ),
        timeseries(
            46,
            "Shadow |difference| (numeric outputs)",
            [
                prom(quantile(0.5, "infersight_shadow_abs_difference", M), "p50"),
                prom(quantile(0.99, "infersight_shadow_abs_difference", M), "p99"),
            ],
            description="Absolute difference between the shadow's and the model's predictions.",
            w=8,
        ),
        timeseries(
            49,
            "Parity: largest |difference| on golden rows",
            [
                prom(
                    f"max({sel('infersight_parity_max_abs_difference', M)})",
                    "largest difference",
                )
            ],
            description=(
                "Golden rows of the profile replayed to the model server every"
                " parity.interval_seconds: the largest absolute difference from the model's"
                " training-time outputs (a mismatch fires InferSightParityMismatch)."
            ),
            w=8,
        ),
        timeseries(
            50,
            "Parity probes by outcome",
            [
                prom(
                    sum_rate(
                        sel("infersight_parity_probes_total", M), "outcome", "$__range", "increase"
                    ),
                    "{{outcome}}",
                )
            ],
            description="Parity probes over the range: ok, mismatch, or error (no answer).",
            w=8,
        ),
        stat(
            51,
            "Version changes and profile mismatch",
            [
                prom(
                    sum_rate(
                        sel("infersight_model_version_changes_total", M),
                        "",
                        "$__range",
                        "increase",
                    ),
                    "version changes in range",
                ),
                prom(
                    f"max({sel('infersight_profile_mismatch', M)})", "profile for another version"
                ),
            ],
            description=(
                "Changes of the served version seen by the sidecars (from responses and model"
                " metadata), and 1 when the profile was built for another model version."
            ),
            thresholds=[(None, "green"), (1, "orange")],
            w=8,
        ),
    ]
    variables = [
        query_variable("model", "Model", "label_values(infersight_model_info, model)"),
        query_variable(
            "feature",
            "Feature",
            f"label_values({sel('infersight_feature_bin_total', M)}, feature)",
            multi=True,
        ),
    ]
    return dashboard(
        "infersight-model",
        "InferSight / Model",
        "One model: predictions against the reference, drift, input quality, version and age.",
        panels,
        variables,
    )


# --- InferSight / Requests (Loki) -------------------------------------------------------------


def requests() -> dict[str, Any]:
    summary = (
        "{{.status}} {{.model}}/{{.model_version}} {{.protocol}} rows={{.n_rows}}"
        " {{.latency_ms}} ms (upstream {{.upstream_ms}} ms) id={{.request_id}}"
    )
    slow = (
        "{{.latency_ms}} ms (upstream {{.upstream_ms}} ms) {{.status}} {{.model}}"
        " rows={{.n_rows}} id={{.request_id}} trace={{.trace_id}}"
    )

    def violating_rows(kind: str) -> dict[str, Any]:
        # violations is {kind: {feature: rows}}; the repeated panel's feature picks one path.
        path = f'violations.{kind}[\\"${{feature:raw}}\\"]'
        lines = (
            f'{LOG_STREAM} | json event="event", model="model", rows="{path}"'
            f' | {REQUEST_EVENT} | {MS} | rows != ""'
        )
        expr = f'sum by (model) (sum_over_time({lines} | unwrap rows | __error__="" [$__interval]))'
        return loki(expr, f"{{{{model}}}} {kind}")

    def p99(field: str) -> str:
        lines = request_log("event", "model", field, where=not_empty(field))
        return (
            "max by (model) (quantile_over_time(0.99, "
            f'{lines} | unwrap {field} | __error__="" [$__interval]))'
        )

    slowest = request_log("event", "request_id", "model", "status", "latency_ms")
    panels = [
        row(1, "Requests"),
        timeseries(
            2,
            "Requests by status (from the log)",
            [
                loki(
                    "sum by (status) (count_over_time("
                    f"{request_log('event', 'model', 'status')} [$__interval]))",
                    "{{status}}",
                )
            ],
            description="Request-log lines per interval by HTTP status.",
            stacked=True,
            w=8,
        ),
        logs(
            3,
            "Recent requests",
            f'{LOG_STREAM} | json | {REQUEST_EVENT} | {MS} | line_format "{summary}"',
            description=(
                "The newest request lines; open one for all its fields (trace_id, violations,"
                " predictions)."
            ),
            w=16,
        ),
        row(10, "Slow requests"),
        panel(
            11,
            "table",
            "Slowest requests in range",
            [
                loki(
                    "topk(10, max by (request_id, model, status) (max_over_time("
                    f'{slowest} | unwrap latency_ms | __error__="" [$__range])))',
                    instant=True,
                )
            ],
            description="The ten slowest requests in the range (latency_ms: sidecar total).",
            w=10,
            transformations=[
                {"id": "labelsToFields", "options": {"mode": "columns"}},
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "latency_ms"},
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"desc": True, "field": "latency_ms"}]}},
            ],
        ),
        logs(
            12,
            "Requests slower than $min_latency_ms ms",
            f"{LOG_STREAM} | json | {REQUEST_EVENT} | {MS} | latency_ms > $min_latency_ms"
            f' | line_format "{slow}"',
            description="Requests above the latency threshold chosen at the top of the dashboard.",
            w=14,
        ),
        timeseries(
            13,
            "Latency p99 from the log: sidecar vs upstream",
            [
                loki(p99("latency_ms"), "{{model}} sidecar"),
                loki(p99("upstream_ms"), "{{model}} upstream"),
            ],
            description="p99 of latency_ms and upstream_ms per interval, from the request lines.",
            unit="ms",
            w=24,
            h=7,
        ),
        row(20, "Validation"),
        logs(
            21,
            "Requests with violations",
            request_log(
                "event",
                "request_id",
                "model",
                "status",
                "rejected",
                "violations",
                where='violations != "{}"',
            )
            + ' | line_format "{{.status}} {{.model}} id={{.request_id}} rejected={{.rejected}}'
            ' violations={{.violations}}"',
            description=(
                "Requests with at least one violating row; violations are {kind: {feature: rows}}."
            ),
        ),
        timeseries(
            22,
            "Rejected requests by reason (from the log)",
            [
                loki(
                    "sum by (rejected) (count_over_time("
                    f"{request_log('event', 'model', 'rejected', where=not_empty('rejected'))}"
                    " [$__interval]))",
                    "{{rejected}}",
                )
            ],
            description=(
                "Requests answered by the sidecar without forwarding: decode, enforce, too_large."
            ),
            stacked=True,
        ),
        timeseries(
            23,
            "Violating rows by kind: $feature",
            [violating_rows(kind) for kind in FEATURE_VIOLATION_KINDS],
            description=(
                "Rows per interval with each kind of violation of this feature (the log line's"
                " violations.<kind>.<feature>)."
            ),
            stacked=True,
            w=8,
            repeat="feature",
        ),
        row(30, "Search"),
        logs(
            31,
            "Request by id (request_id or trace_id)",
            f'{LOG_STREAM} |= "$request_id" | json | {REQUEST_EVENT}'
            ' | request_id="$request_id" or (trace_id="$request_id" and trace_id!="")',
            description=(
                "The request whose x-request-id or W3C trace id is typed in the box at the top,"
                " with every field of its line (inputs too when payload logging is on)."
            ),
            w=24,
        ),
        row(40, "Payloads (logging.payload: true)"),
        logs(
            41,
            "Inputs and predictions",
            request_log(
                "event", "request_id", "model", "inputs", "prediction_values", where='inputs != ""'
            )
            + ' | line_format "{{.model}} id={{.request_id}} inputs={{.inputs}}'
            ' predictions={{.prediction_values}}"',
            description=(
                "Sampled requests with their first rows (redacted fields masked) and prediction"
                " values; empty unless logging.payload is on."
            ),
            w=24,
            h=10,
        ),
    ]
    model_var = query_variable(
        "model", "Model", "label_values(infersight_model_info, model)", multi=True
    )
    model_var["allValue"] = ".*"
    feature_var = query_variable(
        "feature",
        "Feature",
        f"label_values({sel('infersight_feature_bin_total', MS)}, feature)",
        multi=True,
    )
    thresholds = ["100", "250", "500", "1000", "2500"]
    variables = [
        model_var,
        feature_var,
        {
            "current": {"selected": True, "text": "500", "value": "500"},
            "hide": 0,
            "label": "Slower than (ms)",
            "name": "min_latency_ms",
            "options": [{"selected": v == "500", "text": v, "value": v} for v in thresholds],
            "query": ",".join(thresholds),
            "skipUrlSync": False,
            "type": "custom",
        },
        {
            "current": {"selected": False, "text": "", "value": ""},
            "hide": 0,
            "label": "Request or trace id",
            "name": "request_id",
            "options": [{"selected": True, "text": "", "value": ""}],
            "query": "",
            "skipUrlSync": False,
            "type": "textbox",
        },
    ]
    return dashboard(
        "infersight-requests",
        "InferSight / Requests",
        "Request-log lines in Loki: recent and slow requests, violations, search by id, payloads.",
        panels,
        variables,
        alerts_annotation=False,
    )


DASHBOARDS = {
    "infersight-service.json": service,
    "infersight-model.json": model,
    "infersight-requests.json": requests,
}


def render(dashboard_json: dict[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard_json, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: render(make()) for name, make in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in build().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python grafana/build_dashboards.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
