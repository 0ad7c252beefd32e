"""Session fixtures: real model servers on loopback (see tests/integration/servers/harness.py).

Each fixture builds (once) the server's own virtualenv ``.venvs/<name>`` if needed, trains the
loan model into a session temp dir and starts the server; it is stopped at the end of the
session.  When a server venv cannot be built the fixture skips, except under CI (``CI=true``)
where it fails, so a broken setup is never mistaken for a pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.servers import harness
from tests.integration.servers.harness import RunningServer


def _serve(
    name: str, start: Callable[[Path], RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    reason = None
    try:
        harness.ensure_server_venv(name)
    except RuntimeError as exc:
        reason = f"{name} server venv unavailable: {exc}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = start(tmp_path_factory.mktemp(name))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """MLServer 1.7.1 (V2 REST at .url, gRPC at .grpc_address) serving model "loan" v1."""
    yield from _serve("mlserver", harness.start_mlserver, tmp_path_factory)


@pytest.fixture(scope="session")
def mlserver_swapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """MLServer serving a *different* model under the same name "loan" (version v2): what a
    wrong deployment looks like to parity probes."""

    def start(workdir: Path) -> RunningServer:
        return harness.start_mlserver(workdir, model_version="v2", variant="swapped")

    yield from _serve("mlserver", start, tmp_path_factory)


@pytest.fixture(scope="session")
def kserve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """KServe model server (V1 + V2 REST at .url, gRPC at .grpc_address), model "loan"."""
    yield from _serve("kserve", harness.start_kserve, tmp_path_factory)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``mlflow models serve`` of the loan model (POST .url + "/invocations")."""
    yield from _serve("mlflow", harness.start_mlflow, tmp_path_factory)
