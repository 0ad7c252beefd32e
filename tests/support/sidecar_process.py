"""Run `infersight serve` as a real process on a free loopback port (restartable)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.stub_upstream import free_port

ROOT = Path(__file__).resolve().parents[2]


class SidecarProcess:
    """`python -m app.cli serve --config CONFIG` with its output in `log_path`."""

    def __init__(self, config: Path, log_path: Path, port: int | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> SidecarProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("INFERSIGHT_FEEDBACK__STORE", None)  # the config file says where
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--config", str(self.config),
                 "--port", str(self.port)],
                cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sidecar not up after {timeout} s: {self.tail()}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait (the sidecar drains its queues and closes its store)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
