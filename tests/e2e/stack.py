"""Real Prometheus and Alertmanager (Debian's packages) on loopback, run with the project's own
configs: only targets are rewritten to loopback and intervals shortened."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.components import require_binary
from tests.support.stub_upstream import free_port

ROOT = Path(__file__).resolve().parents[2]


def require(binary: str) -> str:
    """The binary's path; fail in CI, skip elsewhere, when it is missing."""
    return require_binary(binary, "prometheus / prometheus-alertmanager")


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(p: Process, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.url} exited:\n{p.tail()}")
        try:
            with urllib.request.urlopen(p.url + path, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{p.url}{path} not ready in {timeout:.0f} s:\n{p.tail()}")


@contextmanager
def _run(cmd: list[str], log: Path, url: str, ready: str) -> Iterator[Process]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        p = Process(url, proc, log)
        try:
            _wait_ready(p, ready)
            yield p
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prometheus_config(sidecar: str, alertmanager: str, interval: str = "1s") -> dict[str, Any]:
    """The project's prometheus.yml with loopback targets, short intervals, absolute rule paths."""
    cfg = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    cfg.setdefault("global", {})
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [
        str((ROOT / "prometheus" / pattern).resolve())
        if not Path(pattern).is_absolute()
        else pattern
        for pattern in cfg.get("rule_files", [])
    ]
    jobs = []
    for job in cfg.get("scrape_configs", []):
        if job.get("job_name") == "infersight":
            job["static_configs"] = [{"targets": [sidecar]}]
            jobs.append(job)
    cfg["scrape_configs"] = jobs
    cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return cfg


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The project's alertmanager.yml with every receiver pointed at the test's webhook."""
    cfg = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in cfg.get("receivers", []):
        for key in list(receiver):
            if key.endswith("_configs"):
                del receiver[key]
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]

    def shorten(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        route["repeat_interval"] = "1m"
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    return cfg


@contextmanager
def prometheus(workdir: Path, sidecar: str, alertmanager: str) -> Iterator[Process]:
    binary = require("prometheus")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(sidecar, alertmanager)))
    cmd = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    with _run(cmd, workdir / "prometheus.log", f"http://127.0.0.1:{port}", "/-/ready") as p:
        yield p


@contextmanager
def alertmanager(workdir: Path, webhook_url: str) -> Iterator[Process]:
    binary = (
        require("prometheus-alertmanager")
        if shutil.which("alertmanager") is None
        else "alertmanager"
    )
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
    cmd = [
        shutil.which(binary) or binary, f"--config.file={config}",
        f"--storage.path={workdir / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=", "--log.level=warn",
    ]  # fmt: skip
    with _run(cmd, workdir / "alertmanager.log", f"http://127.0.0.1:{port}", "/-/ready") as p:
        yield p


def query(prom: Process, expr: str) -> dict[str, Any]:
    """Run an instant query; returns the API's `data` (raises with the error on failure)."""
    import json

    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"query failed: {expr}\n{exc.read().decode()}") from None
    assert doc["status"] == "success", doc
    return doc["data"]  # type: ignore[no-any-return]


def alerts(prom: Process) -> list[dict[str, Any]]:
    import json

    with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=10) as r:
        return json.load(r)["data"]["alerts"]  # type: ignore[no-any-return]
