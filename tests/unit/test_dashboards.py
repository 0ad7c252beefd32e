"""The Grafana dashboards and their provisioning, checked without Grafana.

The JSON is the generator's output; every panel has a query on a provisioned datasource;
PromQL uses only documented metrics and parses (promtool); LogQL reads only fields that a
real request-log line has. The end-to-end test runs the PromQL against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml

from app.config import LoggingSettings, Settings, UpstreamSettings
from app.monitoring.batch import Batch
from app.monitoring.profile import VIOLATION_KINDS, Profile
from app.telemetry.logging import LineSink
from app.telemetry.request_log import RequestLog
from tests.support.components import require_binary
from tests.support.grafana_queries import (
    NOT_EXPORTED_YET,
    PanelQuery,
    balanced,
    json_path,
    logql_fields,
    metric_names,
    panel_queries,
    substitute,
)
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
EXPECTED = {
    "infersight-service.json": ("InferSight / Service", "infersight-service"),
    "infersight-model.json": ("InferSight / Model", "infersight-model"),
    "infersight-requests.json": ("InferSight / Requests", "infersight-requests"),
}
VARIABLES: dict[str, str | list[str]] = {
    "model": "loan",
    "feature": ["age", "employment"],
    "min_latency_ms": "500",
    "request_id": "req-1",
}
LOG_FEATURE = "age"
"""The feature a repeated Requests panel is drawn for (its violations are in the test line)."""


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((GRAFANA / "dashboards" / name).read_text()))


DASHBOARDS = {name: _load(name) for name in EXPECTED}


def _queries(datasource: str) -> list[PanelQuery]:
    return [q for d in DASHBOARDS.values() for q in panel_queries(d) if q.datasource == datasource]


def _ids(q: PanelQuery) -> str:
    return f"{q.dashboard}#{q.panel_id}{q.ref_id}"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.extend([p, *p.get("panels", [])] if p["type"] == "row" else [p])
    return out


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


# --- files ------------------------------------------------------------------------------------


def test_committed_json_is_the_generators_output() -> None:
    built = BUILDER.build()
    assert sorted(built) == sorted(EXPECTED)
    for name, text in built.items():
        committed = (GRAFANA / "dashboards" / name).read_text()
        assert committed == text, f"{name} is stale: run python grafana/build_dashboards.py"
    assert BUILDER.build() == built  # deterministic


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_titles_uids_and_no_generated_noise(name: str) -> None:
    d = DASHBOARDS[name]
    assert (d["title"], d["uid"]) == EXPECTED[name]
    assert "infersight" in d["tags"]
    text = (GRAFANA / "dashboards" / name).read_text()
    for noise in ('"iteration"', '"version"', '"id": null', '"gnetId"', '"__inputs"'):
        assert noise not in text, noise
    ids = [p["id"] for p in _panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique (alerts link to them)"
    assert all(isinstance(i, int) for i in ids)


def test_provisioning_matches_the_dashboards() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["prometheus"]["isDefault"] is True
    assert by_uid["loki"]["type"] == "loki"
    assert by_uid["loki"]["url"] == "http://loki:3100"
    assert sum(bool(s.get("isDefault")) for s in sources["datasources"]) == 1

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "InferSight"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    for d in DASHBOARDS.values():
        for p in _panels(d):
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] in by_uid, (d["title"], p["title"])
            targets = [t for t in p["targets"] if t.get("expr", "").strip()]
            assert targets, f"{d['title']} / {p['title']} has no query"
            for t in targets:
                assert t["datasource"]["uid"] in by_uid
        for v in d["templating"]["list"]:
            if "datasource" in v:
                assert v["datasource"]["uid"] in by_uid


def test_requests_dashboard_panels_are_loki_and_the_others_prometheus() -> None:
    for name, d in DASHBOARDS.items():
        want = "loki" if name == "infersight-requests.json" else "prometheus"
        assert {q.datasource for q in panel_queries(d)} == {want}


def test_variables() -> None:
    def variables(name: str) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}

    model = variables("infersight-model.json")
    assert model["model"]["query"]["query"] == "label_values(infersight_model_info, model)"
    assert not model["model"]["multi"]
    feature = model["feature"]
    assert (
        feature["query"]["query"]
        == 'label_values(infersight_feature_bin_total{model="$model"}, feature)'
    )
    assert feature["multi"]
    assert feature["includeAll"]
    requests = variables("infersight-requests.json")
    assert requests["request_id"]["type"] == "textbox"
    # Every variable a query uses is defined on its dashboard.
    for d in DASHBOARDS.values():
        defined = {v["name"] for v in d["templating"]["list"]}
        for q in panel_queries(d):
            used = set(re.findall(r"\$\{?(\w+)", q.expr)) - {
                "__rate_interval",
                "__interval",
                "__range",
            }
            assert used <= defined, (_ids(q), used - defined)


def test_repeated_panels_repeat_over_a_multi_value_variable() -> None:
    for d in DASHBOARDS.values():
        multi = {v["name"] for v in d["templating"]["list"] if v.get("multi")}
        for p in _panels(d):
            if "repeat" in p:
                assert p["repeat"] in multi


def test_every_alert_links_to_an_existing_panel() -> None:
    readme = (ROOT / "README.md").read_text()
    alerts = set(re.findall(r"\bInferSight[A-Z]\w+", _section(readme, "Alerts")))
    rules = [
        rule
        for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
        for rule in group.get("rules", [])
    ]
    alerts |= {rule["alert"] for rule in rules if "alert" in rule}
    assert alerts == set(BUILDER.ALERT_PANELS), "documented or defined alerts without a panel"
    uids = {d["uid"]: {p["id"] for p in _panels(d)} for d in DASHBOARDS.values()}
    for alert, (uid, panel_id) in BUILDER.ALERT_PANELS.items():
        assert panel_id in uids[uid], alert
    # Alert rules that link to a panel must link to one that exists.
    for rule in rules:
        for value in rule.get("annotations", {}).values():
            for uid, panel_id in re.findall(r"/d/([\w-]+)[^\s\"']*?viewPanel=(\d+)", value):
                assert int(panel_id) in uids.get(uid, set()), (rule.get("alert"), value)


# --- PromQL -----------------------------------------------------------------------------------


def _documented_metrics() -> tuple[set[str], set[str]]:
    """(metric names, histogram names) from README's metric reference table."""
    names, histograms = set(), set()
    for line in _section((ROOT / "README.md").read_text(), "Metric reference").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`infersight_"):
            continue
        for name in re.findall(r"`(infersight_[a-z_]+)`", cells[0]):
            names.add(name)
            if cells[1] == "histogram":
                histograms.add(name)
    return names, histograms


def test_readme_metric_reference_is_parsed() -> None:
    names, histograms = _documented_metrics()
    assert {"infersight_requests_total", "infersight_drift_score"} <= names
    assert {"infersight_request_duration_seconds", "infersight_prediction"} <= histograms


@pytest.mark.parametrize("q", _queries("prometheus"), ids=_ids)
def test_prometheus_queries_use_documented_metrics(q: PanelQuery) -> None:
    names, histograms = _documented_metrics()
    allowed = names | {
        f"{h}{suffix}" for h in histograms for suffix in ("_bucket", "_sum", "_count")
    }
    used = metric_names(substitute(q.expr, VARIABLES))
    assert used, "no metric"
    for name in used:
        if name in allowed or name.startswith("process_") or ":" in name:
            continue
        assert name.startswith(NOT_EXPORTED_YET), f"{name} is not in README's metric reference"
        assert not q.expects_data


def test_recording_rules_used_by_panels_are_recorded() -> None:
    recorded = {
        rule["record"]
        for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }
    used = {
        name
        for q in _queries("prometheus")
        for name in metric_names(substitute(q.expr, VARIABLES))
        if ":" in name
    }
    assert used, "the Model dashboard shows the drift alerts' fleet-wide PSI"
    assert used <= recorded, f"not recorded in prometheus/rules: {sorted(used - recorded)}"


@pytest.mark.parametrize("q", _queries("prometheus"), ids=_ids)
def test_prometheus_queries_are_balanced_and_fully_substituted(q: PanelQuery) -> None:
    expr = substitute(q.expr, VARIABLES)
    assert balanced(expr)
    assert "$" not in expr
    assert "[[" not in expr


def _require(binary: str) -> str:
    return require_binary(binary, "prometheus")


def test_prometheus_queries_parse(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule): no server needed."""
    promtool = _require("promtool")
    queries = _queries("prometheus")
    rules = [
        {"record": f"grafana:query_{i}", "expr": substitute(q.expr, VARIABLES)}
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above is not vacuous."""
    promtool = _require("promtool")
    path = tmp_path / "broken.yml"
    rule = {"record": "grafana:broken", "expr": "sum by (le (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, check=False)
    assert done.returncode != 0


# --- LogQL against a real request-log line ----------------------------------------------------


def request_line() -> dict[str, Any]:
    """A request-log line rendered by the real RequestLog with payload logging on: a request
    with every kind of violation of one feature, a trace id and a rejection reason."""
    stream = io.StringIO()
    log = RequestLog(LoggingSettings(payload=True), on_drop=lambda n: None, sink=LineSink(stream))
    log.start()
    log.submit(
        {
            "time": time.time(),
            "request_id": "req-1",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "model": "loan",
            "model_version": "v1",
            "protocol": "v2",
            "status": 200,
            "n_rows": 2,
            "latency_ms": 3.1,
            "upstream_ms": 2.6,
            "violations": {kind: {LOG_FEATURE: 1} for kind in BUILDER.FEATURE_VIOLATION_KINDS},
            "rejected": None,
            "error": None,
            "prediction_values": [0.1, 0.7],
            "payload": True,
            "batch": Batch(2, {LOG_FEATURE: [41, None], "employment": ["employed", "new"]}),
        }
    )
    assert log.flush()
    log.stop()
    (line,) = stream.getvalue().splitlines()
    return dict(json.loads(line))


def unknown_fields(expr: str, line: dict[str, Any]) -> list[str]:
    """Fields a LogQL query reads through `| json` that the log line does not have."""
    fields = logql_fields(expr)
    problems = []
    if not fields.plain_json and not fields.json_params:
        problems.append("no | json stage")
    # A plain `| json` turns top-level scalars into labels (objects are flattened under
    # prefixed names and arrays skipped, so those need an explicit `| json name="path"`).
    available = {k for k, v in line.items() if not isinstance(v, dict | list)}
    labels = set(available) if fields.plain_json else set()
    for label, path in fields.json_params.items():
        try:
            json_path(line, path)
        except KeyError:
            problems.append(f"json path {path!r}")
        if re.fullmatch(r"\w+", path) and label != path:
            problems.append(f"{label}={path!r} renames a log field")
        labels.add(label)
    problems.extend(sorted(fields.referenced - labels))
    return problems


def test_the_field_check_is_not_vacuous() -> None:
    line = request_line()
    good = '{app="x"} | json latency_ms="latency_ms" | latency_ms > 10 | unwrap latency_ms'
    assert unknown_fields(good, line) == []
    assert unknown_fields('{app="x"} | json | duration > 10', line) == ["duration"]
    assert unknown_fields('{app="x"} | json | line_format "{{.inputs}}"', line) == ["inputs"]
    assert unknown_fields('{app="x"} | json v="violations.missing.income"', line) == [
        "json path 'violations.missing.income'"
    ]
    assert unknown_fields('{app="x"} | json latency="latency_ms"', line) == [
        "latency='latency_ms' renames a log field"
    ]
    assert unknown_fields('sum by (host) (count_over_time({app="x"} | json [1m]))', line) == [
        "host"
    ]


def test_feature_violation_kinds_are_the_validators() -> None:
    assert set(BUILDER.FEATURE_VIOLATION_KINDS) <= set(VIOLATION_KINDS)


@pytest.mark.parametrize("q", _queries("loki"), ids=_ids)
def test_loki_queries_read_only_fields_of_a_real_request_line(q: PanelQuery) -> None:
    line = request_line()
    expr = substitute(q.expr, {**VARIABLES, "feature": LOG_FEATURE})
    assert balanced(expr)
    assert "$" not in expr
    assert BUILDER.LOG_STREAM in expr
    assert BUILDER.REQUEST_EVENT in expr, "request lines only (uvicorn logs share the stream)"
    assert unknown_fields(expr, line) == []


async def test_the_test_line_has_the_fields_of_a_line_the_proxy_writes(profile: Profile) -> None:
    """The line above is built by hand; the proxy must write the same fields."""
    rows = {
        "age": [40],
        "monthly_income": [3000.0],
        "marital_status": ["married"],
        "employment": ["gig-worker"],  # never seen in training: a violation
        "loan_amount": [5000.0],
        "has_mortgage": [True],
        "purpose": ["renovate the kitchen"],
    }
    types = {
        "age": "INT64",
        "monthly_income": "FP64",
        "loan_amount": "FP64",
        "has_mortgage": "BOOL",
    }
    body = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": types.get(k, "BYTES"), "data": v}
            for k, v in rows.items()
        ]
    }
    async with StubUpstream() as up:
        settings = Settings(
            upstream=UpstreamSettings(url=up.url, timeout_seconds=1.0),
            logging=LoggingSettings(payload=True),
        )
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
            async with http.post(f"{sc.url}/v2/models/loan/infer", json=body, headers=headers) as r:
                assert r.status == 200
            (real,) = sc.log_lines()
    assert real["violations"], "the request should have violations"
    assert set(real) == set(request_line())


# --- the helpers ------------------------------------------------------------------------------


def test_substitute() -> None:
    expr = 'rate(x{model="$model", feature=~"${feature}"}[$__rate_interval]) [$__range] $__interval'
    assert (
        substitute(expr, {"model": "loan", "feature": ["a", "b.c"]}, "2m")
        == r'rate(x{model="loan", feature=~"(a|b\.c)"}[2m]) [1h] 2m'
    )
    assert substitute('f=~"$feature"', {"feature": "a|b"}) == 'f=~"a|b"'
    assert substitute('f=~"$feature"', {"feature": ["a"]}) == 'f=~"a"'
    assert substitute('p="v.${feature:raw}"', {"feature": ["a.b"]}) == 'p="v.a.b"'
    assert substitute("x[$__interval]", {}, interval="30s") == "x[30s]"
    with pytest.raises(KeyError, match="nope"):
        substitute('x{a="$nope"}', {})


def test_metric_names_and_balance() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y(", le!=""}[5m])))'
        " / ignoring (bin) group_left sum(b) and on (instance) c_total offset 5m"
        " + job:rule:ratio * time() - 1e-4"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "job:rule:ratio"}
    assert balanced(expr)
    assert not balanced("sum(rate(x[1m])")
    assert not balanced("x{a='b'")
    assert balanced('x{a=")"}')


def test_panel_queries_see_collapsed_rows_and_skip_hidden_targets() -> None:
    d = {
        "title": "T",
        "panels": [
            {
                "type": "row",
                "id": 1,
                "panels": [
                    {
                        "id": 2,
                        "title": "P",
                        "type": "timeseries",
                        "datasource": {"uid": "prometheus"},
                        "targets": [
                            {"refId": "A", "expr": "up"},
                            {"refId": "B", "expr": "down", "hide": True},
                        ],
                    }
                ],
            }
        ],
    }
    assert panel_queries(d) == [PanelQuery("T", 2, "P", "prometheus", "up", "A", False)]
