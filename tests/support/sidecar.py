"""Run the real sidecar app under uvicorn on a free loopback port, inside the test's loop."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.monitoring.profile import Profile
from tests.support.stub_upstream import free_port


@dataclass
class RunningSidecar:
    url: str
    app: FastAPI
    registry: CollectorRegistry
    log_stream: io.StringIO

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A metric sample from the registry (the same values /metrics shows)."""
        return self.registry.get_sample_value(name, labels or {})

    def log_lines(self) -> list[dict[str, Any]]:
        """Request log lines written so far (after draining the queue)."""
        self.app.state.infersight.request_log.flush()
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines() if line]


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text → {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@asynccontextmanager
async def run_sidecar(
    settings: Settings, profiles: dict[str, Profile] | None = None
) -> AsyncIterator[RunningSidecar]:
    port = free_port()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    registry = CollectorRegistry()
    stream = io.StringIO()
    app = create_app(settings, registry=registry, profiles=profiles, request_stream=stream)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("sidecar did not start")
    try:
        yield RunningSidecar(f"http://127.0.0.1:{port}", app, registry, stream)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
