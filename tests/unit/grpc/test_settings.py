"""The `grpc` settings section and `infersight serve --grpc-port/--upstream-grpc`."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from rich.console import Console

import app.main
from app.cli import build_parser, cmd_serve
from app.config import Settings, load_settings
from app.errors import ConfigError
from app.grpc.server import GrpcServer


def test_grpc_section_defaults_off_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = load_settings()
    assert (s.grpc.port, s.grpc.upstream, s.grpc.max_message_bytes) == (None, None, None)
    monkeypatch.setenv("INFERSIGHT_GRPC__PORT", "9001")
    monkeypatch.setenv("INFERSIGHT_GRPC__UPSTREAM", "127.0.0.1:8081")
    s = load_settings()
    assert (s.grpc.port, s.grpc.upstream) == (9001, "127.0.0.1:8081")


@pytest.mark.parametrize("upstream", ["http://127.0.0.1:8081", "127.0.0.1", ":8081", "h:port"])
def test_grpc_upstream_must_be_host_port(upstream: str) -> None:
    with pytest.raises(ConfigError, match=r"grpc\.upstream"):
        load_settings(grpc={"upstream": upstream})


@pytest.mark.parametrize(
    ("grpc", "protocol", "needle"),
    [
        ({"port": 9001}, "v2", "needs grpc.upstream"),
        ({"port": 9001, "upstream": "127.0.0.1:1"}, "v1", "protocol v2"),
    ],
)
def test_grpc_server_refuses_incomplete_settings(
    grpc: dict[str, Any], protocol: str, needle: str
) -> None:
    settings = Settings(protocol=protocol, grpc=grpc)
    with pytest.raises(ConfigError, match=needle):
        GrpcServer(settings, None, None, None, None)  # type: ignore[arg-type]


def test_serve_grpc_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSIGHT_GRPC__UPSTREAM", "127.0.0.1:1")  # the flag wins
    seen: dict[str, Settings] = {}
    monkeypatch.setattr(app.main, "create_app", lambda s, **_: seen.setdefault("s", s))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    args = build_parser().parse_args(
        ["serve", "--upstream", "http://127.0.0.1:8080", "--grpc-port", "9001",
         "--upstream-grpc", "127.0.0.1:8081"]
    )  # fmt: skip
    assert cmd_serve(args, Console(quiet=True)) == 0
    assert (seen["s"].grpc.port, seen["s"].grpc.upstream) == (9001, "127.0.0.1:8081")
