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
from tests.support.serve_settings import serve_settings

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


def model_server() -> dict[str, Any]:
    return next(c for c in pod()["spec"]["containers"] if c["name"] == "model-server")


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


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
    ports = container_ports(sidecar())
    service = load("service.yaml")["spec"]
    targets = {p["name"]: p["targetPort"] for p in service["ports"]}
    assert targets == {"http": "infersight", "grpc": "infersight-grpc"}
    assert set(targets.values()) <= set(ports), "the Service reaches the sidecar's ports only"
    assert len({p["port"] for p in service["ports"]}) == len(service["ports"])
    assert ports["infersight"] == 8090
    assert ports["infersight-grpc"] == 8091
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


def test_sidecar_serves_http_and_grpc_on_its_declared_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The container's args with the ConfigMap's file, through the real CLI and settings.
    config = tmp_path / "infersight.yaml"
    config.write_text(load("configmap.yaml")["data"]["infersight.yaml"])
    args = list(sidecar()["args"])
    args[args.index("--config") + 1] = str(config)
    settings = serve_settings(monkeypatch, args)
    ports = container_ports(sidecar())
    assert settings.host == "0.0.0.0"
    assert settings.port == ports["infersight"]
    assert settings.protocol == "v2", "gRPC serves the Open Inference Protocol (v2) only"
    assert settings.grpc.port == ports["infersight-grpc"]
    # Forwarded to the model server's gRPC port, in the same pod.
    assert settings.grpc.upstream == f"127.0.0.1:{container_ports(model_server())['model-grpc']}"
    assert settings.upstream.url == f"http://127.0.0.1:{container_ports(model_server())['model']}"
    # Container ports are named uniquely in the pod: the Service and probes refer to names.
    names = [p["name"] for c in pod()["spec"]["containers"] for p in c["ports"]]
    assert len(names) == len(set(names))
