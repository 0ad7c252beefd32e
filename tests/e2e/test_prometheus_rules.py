"""The shipped Prometheus and Alertmanager configuration, checked with the real tools.

promtool (Debian's `prometheus`) validates prometheus.yml and the rule files and runs the unit
tests in prometheus/tests/; amtool (Debian's `prometheus-alertmanager`) validates
alertmanager.yml and its routing. The alert names are a contract (DESIGN.md's alert table), and
every alert must carry what an on-call engineer needs: severity, summary, description and a
runbook_url that lands on its README section.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.components import require_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.yml"
README = ROOT / "README.md"

# DESIGN.md's alert table (the contract). DESIGN.md itself is checked against this list when
# it is present (see test_design_table_is_the_contract).
DESIGN_ALERTS = (
    "InferSightDown",
    "InferSightUpstreamUnavailable",
    "InferSightHighErrorRate",
    "InferSightHighLatency",
    "InferSightMemoryGrowth",
    "InferSightFeatureDrift",
    "InferSightMissingValuesSpike",
    "InferSightUnseenCategories",
    "InferSightValidationRejections",
    "InferSightPredictionDrift",
    "InferSightPredictionMeanShift",
    "InferSightQualityDrop",
    "InferSightModelStale",
    "InferSightModelVersionChanged",
    "InferSightNonFinitePredictions",
    "InferSightShadowDisagreement",
    "InferSightLogRecordsDropped",
)
EXTRA_ALERTS = ("InferSightParityMismatch", "InferSightMonitoringErrors")
"""Alerts beyond the design's table, after the design's: parity probes (model lifecycle) and
the sidecar's own monitoring errors (reliability)."""
ALL_ALERTS = DESIGN_ALERTS + EXTRA_ALERTS
DESIGN_CANDIDATES = (
    ROOT / "DESIGN.md",
    ROOT / "docs" / "DESIGN.md",
    ROOT.parent / "shared" / "DESIGN.md",  # the development workspace keeps it beside the clone
)
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK = "https://github.com/infersight/infersight#"


def require(binary: str) -> str:
    """The binary's path; a missing one fails in CI (CI=true) and skips elsewhere."""
    return require_binary(binary, PACKAGES[binary])


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def readme_alert_sections() -> list[str]:
    """`### ` headings of README's `## Alerts` section."""
    text = README.read_text()
    match = re.search(r"^## Alerts\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README has no '## Alerts' section"
    return re.findall(r"^### (.+?)\s*$", match.group(1), flags=re.MULTILINE)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- the real tools ------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    promtool = require("promtool")
    out = run(promtool, "check", "config", "prometheus/prometheus.yml").stdout
    assert f"SUCCESS: {len(RULES)} rule files found" in out


def test_promtool_check_rules() -> None:
    promtool = require("promtool")
    assert RULES, "no rule files in prometheus/rules/"
    run(promtool, "check", "rules", *(str(p.relative_to(ROOT)) for p in RULES))


def test_promtool_unit_tests_exist() -> None:
    assert len(RULE_TESTS) >= 2, "no promtool tests in prometheus/tests/"


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    promtool = require("promtool")
    out = run(promtool, "test", "rules", str(path.relative_to(ROOT))).stdout
    assert "SUCCESS" in out


def test_amtool_check_config() -> None:
    amtool = require("amtool")
    run(amtool, "check-config", str(ALERTMANAGER.relative_to(ROOT)))


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("critical", "critical"), ("warning", "warning"), ("info", "info"), ("other", "default")],
)
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    amtool = require("amtool")
    out = run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER.relative_to(ROOT)}",
        f"severity={severity}", "alertname=InferSightFeatureDrift", "model=loan",
    ).stdout  # fmt: skip
    assert out.split() == [receiver]


# -- the contract --------------------------------------------------------------------------


def test_design_table_is_the_contract() -> None:
    # DESIGN.md sits beside the checkout in the workspace; a bare clone has only the README,
    # whose Alerts section must list the same alerts in the same order.
    design = next((p for p in DESIGN_CANDIDATES if p.is_file()), None)
    if design is not None:
        table = re.findall(r"^\| `(InferSight\w+)` \|", design.read_text(), flags=re.MULTILINE)
        assert tuple(table) == DESIGN_ALERTS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    alerts = readme.split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### (InferSight\w+)", alerts, flags=re.MULTILINE)
    assert tuple(headings) == ALL_ALERTS


def test_every_design_alert_has_a_rule() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert set(ALL_ALERTS) - names == set(), "alerts of DESIGN.md without a rule"
    assert names - set(ALL_ALERTS) == set(), "alerts not in DESIGN.md (a contract change)"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']}")
def test_alert_carries_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{rule['alert']} has no {key}"
    assert annotations["runbook_url"] == RUNBOOK + rule["alert"].lower()
    assert "for" in rule, f"{rule['alert']} states no for: duration"


def test_runbook_urls_land_on_readme_sections() -> None:
    sections = readme_alert_sections()
    assert sections == list(ALL_ALERTS), "README '## Alerts' needs one ### section per alert"
    anchors = {github_anchor(s) for s in sections}
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"].removeprefix(RUNBOOK) in anchors


def test_every_alert_has_promtool_tests() -> None:
    tested = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    tested.add(case["alertname"])
    assert set(ALL_ALERTS) - tested == set(), "alerts without a firing promtool test"


def test_inhibition_names_existing_alerts() -> None:
    names = {r["alert"] for r in alert_rules()}
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname=~?"(.+)"', matcher)
            if m:
                assert set(m.group(1).split("|")) <= names, matcher
