"""Imports flow one way: api/grpc → lifecycle → protocols/upstream/telemetry →
monitoring/feedback → errors/config. `grpc` is an inbound transport beside `api`: it may use
the HTTP side's model table and request-id helpers, never the composition root, and nothing
downstream imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
WEB = {"fastapi", "starlette", "aiohttp", "httpx", "uvicorn", "prometheus_client", "structlog"}
GRPC = {"grpc", "app.grpc"}
FORBIDDEN = {
    "monitoring": WEB
    | GRPC
    | {"app.api", "app.protocols", "app.upstream", "app.telemetry", "app.main"},
    "protocols": GRPC
    | {"fastapi", "starlette", "aiohttp", "app.api", "app.upstream", "app.telemetry"},
    "upstream": GRPC | {"fastapi", "starlette", "app.api", "app.protocols", "app.telemetry"},
    "telemetry": GRPC
    | {"fastapi", "starlette", "aiohttp", "app.api", "app.protocols", "app.upstream"},
    "feedback": WEB
    | GRPC
    | {"app.api", "app.protocols", "app.upstream", "app.telemetry", "app.main"},
    "lifecycle": GRPC | {"fastapi", "starlette", "app.api", "app.main"},
    "api": {"grpc", "app.grpc", "app.main"},
    # The HTTP framework and client stay on the HTTP side; gRPC has its own upstream channel.
    "grpc": {"fastapi", "starlette", "aiohttp", "httpx", "uvicorn", "app.main", "app.upstream"},
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downstream(package: str) -> None:
    files = sorted((APP / package).glob("*.py"))
    assert files
    for path in files:
        for name in imports_of(path):
            hits = [b for b in FORBIDDEN[package] if name == b or name.startswith(b + ".")]
            assert not hits, f"{path.relative_to(APP.parent)} imports {name}"
