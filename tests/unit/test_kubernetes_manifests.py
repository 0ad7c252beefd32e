"""The Kubernetes sidecar manifests, checked statically (no cluster here): schemas of the
built-in kinds (kubernetes-validate, offline), and that the parts agree with each other and
with the sidecar's own settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((BASE / name).read_text())
    return doc


def kustomization() -> dict[str, Any]:
    return load("kustomization.yaml")


@pytest.mark.parametrize("name", kustomization()["resources"])
def test_resources_exist_and_built_in_kinds_are_valid(name: str) -> None:
    doc = load(name)
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        return  # a CRD: checked below
    kubernetes_validate.validate(doc, "1.30", strict=True)


def test_every_manifest_is_listed() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = load("deployment.yaml")["spec"]["template"]
    return spec


def sidecar() -> dict[str, Any]:
    return next(c for c in pod()["spec"]["containers"] if c["name"] == "infersight")


def test_sidecar_runs_as_non_root_with_probes_and_a_memory_limit() -> None:
    c = sidecar()
    security = c["securityContext"]
    assert security["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod()["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["memory"]


def test_service_and_pod_monitor_reach_the_sidecar_port() -> None:
    ports = {p["name"]: p["containerPort"] for p in sidecar()["ports"]}
    service = load("service.yaml")["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["infersight"]
    assert ports["infersight"] == 8090
    labels = pod()["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    monitor = load("podmonitor.yaml")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] == "infersight"
    assert endpoint["path"] == "/metrics"
    # The shipped rules watch up{job="infersight"}.
    assert {"targetLabel": "job", "replacement": "infersight"} in endpoint["relabelings"]


def test_config_map_is_valid_sidecar_configuration(tmp_path: Path) -> None:
    text = load("configmap.yaml")["data"]["infersight.yaml"]
    doc = yaml.safe_load(text)
    settings = Settings(**doc)
    assert settings.upstream.url == "http://127.0.0.1:8080"  # the model server in the pod
    mounts = {m["name"]: m["mountPath"] for m in sidecar()["volumeMounts"]}
    assert settings.profiles[0].startswith(mounts["profile"])
    args = sidecar()["args"]
    assert args[args.index("--config") + 1] == mounts["config"]
    env = {e["name"] for e in sidecar()["env"]}
    assert env == {"INFERSIGHT_FEEDBACK__STORE"}  # the PostgreSQL URL, from a Secret
