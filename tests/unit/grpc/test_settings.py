"""The `grpc` settings section and `infersight serve --grpc-port/--upstream-grpc`."""

from __future__ import annotations

from typing import Any

import pytest

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
