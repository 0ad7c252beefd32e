"""A sidecar config for real-process tests, and benchmarks/stub_server.py as a process."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.run import build_profile, process, wait_http
from tests.support.stub_upstream import free_port


def write_config(work: Path, upstream: str, **sections: Any) -> Path:
    """A sidecar config in `work`: the benchmarks' loan profile, request lines to
    `requests.log`, the SQLite feedback store `feedback.db`, drift off; `sections` override."""
    doc: dict[str, Any] = {
        "protocol": "v2",
        "profiles": [str(build_profile(work))],
        "upstream": {"url": upstream, "timeout_seconds": 10},
        "logging": {"sink": str(work / "requests.log")},
        "feedback": {"store": f"sqlite:{work / 'feedback.db'}"},
        "drift": {"enabled": False},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    path = work / "infersight.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def stub_server_process(log: Path) -> Iterator[str]:
    """benchmarks/stub_server.py (a fast V2 model server) in its own process; its URL."""
    port = free_port()
    with process([sys.executable, "-m", "benchmarks.stub_server", "--port", str(port)], log):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/ready")
        yield url
