"""Start real model servers on loopback for integration tests.

Each server runs from its own virtualenv ``.venvs/<name>`` (built by
``scripts/bootstrap_servers.sh`` from ``requirements/servers/<name>.txt``) and serves the
loan-default scikit-learn pipeline that ``train.py`` fits on the synthetic demo data:

* ``start_mlserver``: MLServer + mlserver-sklearn, Open Inference Protocol (V2) REST and gRPC;
* ``start_kserve``:   KServe's model server running ``kserve_model.py`` (V1 and V2 REST, gRPC);
* ``start_mlflow``:   ``mlflow models serve --env-manager local`` (``POST /invocations``).

This module runs in the project's own venv and imports nothing from ``app``.  Every wait is
bounded; a server that does not come up is stopped and a ``RuntimeError`` carries the tail of
its log.  Servers bind 127.0.0.1 only and run in their own process group, which ``stop()``
terminates (then kills) as a whole.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVERS_DIR = Path(__file__).resolve().parent
VENVS_DIR = REPO_ROOT / ".venvs"
REQUIREMENTS_DIR = REPO_ROOT / "requirements" / "servers"
BOOTSTRAP_SCRIPT = REPO_ROOT / "scripts" / "bootstrap_servers.sh"
TRAIN_SCRIPT = SERVERS_DIR / "train.py"
KSERVE_SCRIPT = SERVERS_DIR / "kserve_model.py"
REFERENCE_FILE = "reference.json"

HOST = "127.0.0.1"
SERVER_NAMES = ("mlserver", "kserve", "mlflow")
#: Set to "1" to never run the bootstrap script from tests (missing venvs then raise).
NO_BOOTSTRAP_ENV = "INFERSIGHT_NO_BOOTSTRAP"

BOOTSTRAP_TIMEOUT_S = 1800.0
TRAIN_TIMEOUT_S = 300.0
IMPORT_CHECK_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 40

_IMPORT_CHECKS = {
    "mlserver": "import mlserver, mlserver_sklearn, sklearn, joblib, pandas",
    "kserve": "import kserve, sklearn, joblib, pandas",
    "mlflow": "import mlflow.sklearn, mlflow.pyfunc.scoring_server, sklearn, pandas, uvicorn",
}
_import_ok: dict[tuple[str, str], bool] = {}
_lock = threading.Lock()
_running: list[RunningServer] = []


@dataclass
class RunningServer:
    """A model server process started by this module."""

    name: str
    url: str  # e.g. http://127.0.0.1:PORT
    grpc_address: str | None  # e.g. 127.0.0.1:PORT, or None without gRPC
    process: subprocess.Popen[bytes]
    log_path: Path
    model_name: str | None = None
    model_dir: Path | None = None  # holds reference.json (see load_reference)
    startup_seconds: float = 0.0  # from spawning the process to ready
    _stopped: bool = field(default=False, init=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Terminate the server's process group, wait up to 10 s, then kill it."""
        if self._stopped:
            return
        self._stopped = True
        _terminate(self.process)
        with _lock, contextlib.suppress(ValueError):
            _running.remove(self)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def reference(self) -> dict[str, Any]:
        """The held-out rows and the model's own predictions written by train.py."""
        if self.model_dir is None:
            raise RuntimeError(f"{self.name}: no model_dir")
        return load_reference(self.model_dir)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerStartError(RuntimeError):
    """A server did not become ready (its process is stopped); ``log_path`` has its output."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(message)
        self.log_path = log_path


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports (all sockets held open until every port is picked)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def load_reference(model_dir: Path) -> dict[str, Any]:
    with open(model_dir / REFERENCE_FILE, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _check_name(name: str) -> None:
    if name not in SERVER_NAMES:
        raise ValueError(f"unknown server {name!r}; expected one of {SERVER_NAMES}")


def _venv_python_path(name: str) -> Path:
    return VENVS_DIR / name / "bin" / "python"


def _requirements_sha256(name: str) -> str:
    return hashlib.sha256((REQUIREMENTS_DIR / f"{name}.txt").read_bytes()).hexdigest()


def _stamp_is_current(name: str) -> bool:
    stamp = VENVS_DIR / name / ".requirements.sha256"
    try:
        return stamp.read_text().strip() == _requirements_sha256(name)
    except OSError:
        return False


def _child_env(venv_python: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server-venv process: its bin/ first on PATH, nothing leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLSERVER_", "PYTHON", "VIRTUAL_ENV", "CONDA_"))
    }
    env["PATH"] = f"{venv_python.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(venv_python.parent.parent)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # No phoning home: keep every byte on loopback.
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- venvs


def server_venv_python(name: str) -> Path | None:
    """``.venvs/<name>/bin/python`` if it exists and imports the server's packages."""
    _check_name(name)
    python = _venv_python_path(name)
    if not python.exists():
        return None
    stamp = VENVS_DIR / name / ".requirements.sha256"
    key = (name, str(stamp.stat().st_mtime_ns) if stamp.exists() else "-")
    if key not in _import_ok:
        try:
            done = subprocess.run(
                [str(python), "-c", _IMPORT_CHECKS[name]],
                cwd=str(VENVS_DIR),
                env=_child_env(python),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=IMPORT_CHECK_TIMEOUT_S,
                check=False,
            )
            _import_ok[key] = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _import_ok[key] = False
    return python if _import_ok[key] else None


def ensure_server_venv(name: str) -> Path:
    """The server venv's python; runs ``scripts/bootstrap_servers.sh name`` when the venv is
    missing, broken or built from another requirements file.  RuntimeError if impossible."""
    _check_name(name)
    if _stamp_is_current(name):
        python = server_venv_python(name)
        if python is not None:
            return python
    if os.environ.get(NO_BOOTSTRAP_ENV) == "1":
        raise RuntimeError(
            f"server venv .venvs/{name} is missing or stale and {NO_BOOTSTRAP_ENV}=1; "
            f"run: scripts/bootstrap_servers.sh {name}"
        )
    if not BOOTSTRAP_SCRIPT.exists():
        raise RuntimeError(f"cannot build .venvs/{name}: {BOOTSTRAP_SCRIPT} is missing")
    try:
        done = subprocess.run(
            ["bash", str(BOOTSTRAP_SCRIPT), name],
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BOOTSTRAP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"scripts/bootstrap_servers.sh {name} did not finish in {BOOTSTRAP_TIMEOUT_S:.0f} s"
        ) from exc
    except OSError as exc:
        raise RuntimeError(f"cannot run scripts/bootstrap_servers.sh {name}: {exc}") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(
            f"scripts/bootstrap_servers.sh {name} failed (exit {done.returncode}); "
            f"see .venvs/{name}.log\n{output}"
        )
    python = server_venv_python(name)
    if python is None:
        raise RuntimeError(
            f".venvs/{name} was built but cannot import its server packages "
            f"({_IMPORT_CHECKS[name]}); see .venvs/{name}.log"
        )
    return python


# --------------------------------------------------------------------------- training


def _train(
    python: Path,
    fmt: str,
    out: Path,
    *,
    name: str = "loan",
    version: str = "v1",
    variant: str = "default",
) -> None:
    """Fit and save the model with the server venv's python (skipped if already there)."""
    if (out / REFERENCE_FILE).exists() and _artefact_matches(fmt, out, name, version, variant):
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), str(TRAIN_SCRIPT), "--format", fmt, "--out", str(out)]
    cmd += ["--name", name, "--version", version, "--variant", variant]
    try:
        done = subprocess.run(
            cmd,
            cwd=str(out.parent),
            env=_child_env(python),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TRAIN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"training the {fmt} model took over {TRAIN_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0 or not (out / REFERENCE_FILE).exists():
        output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f"training the {fmt} model failed (exit {done.returncode}):\n{output}")


def _artefact_matches(fmt: str, out: Path, name: str, version: str, variant: str) -> bool:
    try:
        if load_reference(out).get("variant", "default") != variant:
            return False
    except (OSError, ValueError):
        return False
    if fmt == "mlserver":
        try:
            settings = json.loads((out / "model-settings.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(
            settings.get("name") == name
            and settings.get("parameters", {}).get("version") == version
            and (out / "model.joblib").exists()
        )
    if fmt == "kserve":
        return (out / "model.joblib").exists()
    return (out / "MLmodel").exists()


# --------------------------------------------------------------------------- processes


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait up to STOP_GRACE_S, then SIGKILL and reap."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    # The leader may be gone while children (e.g. MLflow's uvicorn) linger: kill the group.
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: pgid == pid
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


def _stop_all_at_exit() -> None:
    with _lock:
        servers = list(_running)
    for server in servers:
        server.stop()


atexit.register(_stop_all_at_exit)


def _spawn(
    name: str, cmd: list[str], *, cwd: Path, log_path: Path, python: Path
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            cmd,
            cwd=str(cwd),
            env=_child_env(python),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange without proxies: (status, headers (lower-case), body bytes).

    ``body`` may be bytes (sent as is) or anything JSON-serialisable.  HTTP error statuses are
    returned, not raised; connection errors raise OSError.
    """
    data: bytes | None
    hdrs = dict(headers or {})
    if body is None or isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _get_ok(url: str, check: Callable[[bytes], bool] | None = None) -> bool:
    try:
        status, _, body = http_request("GET", url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return status == 200 and (check is None or check(body))


def _wait_ready(
    server: RunningServer,
    probes: list[tuple[str, Callable[[bytes], bool] | None]],
    timeout: float,
    started: float,
) -> None:
    """Poll until every probe answers 200 (and passes its check) or fail, stopping the server."""
    deadline = started + timeout
    while True:
        if server.process.poll() is not None:
            reason = f"exited with code {server.process.returncode} before it was ready"
            break
        if all(_get_ok(server.url + path, check) for path, check in probes):
            server.startup_seconds = time.monotonic() - started
            return
        if time.monotonic() >= deadline:
            reason = f"not ready after {timeout:.0f} s (probes: {[p for p, _ in probes]})"
            break
        time.sleep(0.25)
    server.stop()
    raise ServerStartError(
        f"{server.name} server {reason}; last {LOG_TAIL_LINES} lines of {server.log_path}:\n"
        f"{server.log_tail()}",
        log_path=server.log_path,
    )


def _start(
    server_name: str,
    cmd: list[str],
    *,
    python: Path,
    cwd: Path,
    log_path: Path,
    url: str,
    grpc_address: str | None,
    model_name: str | None,
    model_dir: Path,
    probes: list[tuple[str, Callable[[bytes], bool] | None]],
    timeout: float,
) -> RunningServer:
    started = time.monotonic()
    proc = _spawn(server_name, cmd, cwd=cwd, log_path=log_path, python=python)
    server = RunningServer(
        name=server_name,
        url=url,
        grpc_address=grpc_address,
        process=proc,
        log_path=log_path,
        model_name=model_name,
        model_dir=model_dir,
    )
    with _lock:
        _running.append(server)
    try:
        _wait_ready(server, probes, timeout, started)
    except BaseException:
        server.stop()  # also on KeyboardInterrupt / pytest-timeout
        raise
    return server


def _json_field(key: str, value: Any) -> Callable[[bytes], bool]:
    def check(body: bytes) -> bool:
        try:
            return bool(json.loads(body).get(key) == value)
        except (ValueError, AttributeError):
            return False

    return check


# --------------------------------------------------------------------------- servers


_PORT_CLASH = ("address already in use", "errno 98", "failed to bind")


def _retry_on_port_clash(launch: Callable[[], RunningServer], attempts: int = 3) -> RunningServer:
    """Ports are picked free but could be taken before the server binds them: pick again."""
    for attempt in range(attempts):
        try:
            return launch()
        except ServerStartError as exc:
            log = _tail(exc.log_path, 100_000).lower()
            if attempt + 1 == attempts or not any(marker in log for marker in _PORT_CLASH):
                raise
    raise AssertionError("unreachable")


def start_mlserver(
    workdir: Path,
    model_name: str = "loan",
    model_version: str = "v1",
    timeout: float = 120,
    variant: str = "default",
    port: int | None = None,
) -> RunningServer:
    """MLServer 1.7.1 + mlserver-sklearn (V2 REST on ``url``, V2 gRPC on ``grpc_address``).

    ``variant="swapped"`` serves a different model under the same name (see train.py);
    ``port`` fixes the REST port (a restart on the address the previous process had).
    """
    python = ensure_server_venv("mlserver")
    root = Path(workdir).resolve() / "mlserver"
    model_dir = root / "models" / model_name
    _train(python, "mlserver", model_dir, name=model_name, version=model_version, variant=variant)

    def launch() -> RunningServer:
        http_port, grpc_port, metrics_port = _free_ports(3)
        if port is not None:
            http_port = port
        settings = {
            "debug": False,
            "parallel_workers": 0,
            "host": HOST,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_endpoint": None,  # no separate metrics server...
            "metrics_port": metrics_port,  # ...and were it enabled, a free port
            "load_models_at_startup": True,
        }
        # settings.json in the repository root wins over MLSERVER_* environment variables.
        (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        return _start(
            "mlserver",
            [str(python.parent / "mlserver"), "start", str(root)],
            python=python,
            cwd=root,
            log_path=root / f"mlserver-{http_port}.log",
            url=f"http://{HOST}:{http_port}",
            grpc_address=f"{HOST}:{grpc_port}",
            model_name=model_name,
            model_dir=model_dir,
            probes=[("/v2/health/ready", None), (f"/v2/models/{model_name}/ready", None)],
            timeout=timeout,
        )

    return _retry_on_port_clash(launch)


def start_kserve(workdir: Path, model_name: str = "loan", timeout: float = 120) -> RunningServer:
    """KServe ModelServer running kserve_model.py (V1 + V2 REST on ``url``, gRPC)."""
    python = ensure_server_venv("kserve")
    root = Path(workdir).resolve() / "kserve"
    model_dir = root / model_name
    _train(python, "kserve", model_dir, name=model_name)

    def launch() -> RunningServer:
        http_port, grpc_port = _free_ports(2)
        cmd = [
            str(python), str(KSERVE_SCRIPT),
            "--model_dir", str(model_dir),
            "--model_name", model_name,
            "--host", HOST,
            "--http_port", str(http_port),
            "--grpc_port", str(grpc_port),
        ]  # fmt: skip
        return _start(
            "kserve",
            cmd,
            python=python,
            cwd=root,
            log_path=root / f"kserve-{http_port}.log",
            url=f"http://{HOST}:{http_port}",
            grpc_address=f"{HOST}:{grpc_port}",
            model_name=model_name,
            model_dir=model_dir,
            probes=[(f"/v1/models/{model_name}", _json_field("ready", True))],
            timeout=timeout,
        )

    return _retry_on_port_clash(launch)


def start_mlflow(workdir: Path, timeout: float = 180) -> RunningServer:
    """``mlflow models serve`` of an mlflow.sklearn model (``POST /invocations``)."""
    python = ensure_server_venv("mlflow")
    root = Path(workdir).resolve() / "mlflow"
    model_dir = root / "model"
    _train(python, "mlflow", model_dir)

    def launch() -> RunningServer:
        port = free_port()
        cmd = [
            str(python.parent / "mlflow"), "models", "serve",
            "-m", str(model_dir),
            "--env-manager", "local",
            "-h", HOST,
            "-p", str(port),
        ]  # fmt: skip
        return _start(
            "mlflow",
            cmd,
            python=python,
            cwd=root,
            log_path=root / f"mlflow-{port}.log",
            url=f"http://{HOST}:{port}",
            grpc_address=None,
            model_name=None,
            model_dir=model_dir,
            probes=[("/ping", None)],
            timeout=timeout,
        )

    return _retry_on_port_clash(launch)


@contextlib.contextmanager
def running(server: RunningServer) -> Iterator[RunningServer]:
    """``with running(start_kserve(tmp)) as s: ...`` stops the server on exit."""
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # manual smoke run: python -m tests.integration.servers.harness DIR
    import tempfile

    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    for start in (start_mlserver, start_kserve, start_mlflow):
        with running(start(base)) as srv:
            print(
                f"{srv.name}: {srv.url} grpc={srv.grpc_address} ready in "
                f"{srv.startup_seconds:.1f} s, log {srv.log_path}"
            )
