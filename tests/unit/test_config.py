"""Settings from flags, environment and YAML, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert (s.host, s.port, s.protocol) == ("127.0.0.1", 8090, "v2")
    assert s.upstream.timeout_seconds == 30.0
    assert s.validation.max_body_bytes == 16 * 1024 * 1024


def test_environment_sets_top_level_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSIGHT_PROTOCOL", "mlflow")
    monkeypatch.setenv("INFERSIGHT_UPSTREAM__URL", "http://127.0.0.1:5000/")
    monkeypatch.setenv("INFERSIGHT_UPSTREAM__TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("INFERSIGHT_LOGGING__REDACT_FIELDS", '["ssn", "name"]')
    s = load_settings()
    assert s.protocol == "mlflow"
    assert s.upstream.url == "http://127.0.0.1:5000"
    assert s.upstream.timeout_seconds == 2.5
    assert s.logging.redact_fields == ["ssn", "name"]


def test_precedence_flags_over_environment_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "infersight.yaml"
    cfg.write_text(
        "port: 9000\nprotocol: v1\nupstream:\n  url: http://127.0.0.1:1\n  pool_size: 7\n"
        "profiles: [a=/p/a.json, /p/b.json]\n"
    )
    monkeypatch.setenv("INFERSIGHT_PORT", "9100")
    s = load_settings(cfg, port=9200)
    assert s.port == 9200
    assert s.protocol == "v1"
    assert s.upstream.pool_size == 7
    assert s.profile_paths() == [("a", Path("/p/a.json")), (None, Path("/p/b.json"))]
    assert load_settings(cfg).port == 9100
    monkeypatch.delenv("INFERSIGHT_PORT")
    assert load_settings(cfg).port == 9000
    # Flags for one nested field keep the YAML's other fields in that section.
    assert load_settings(cfg, upstream={"url": "http://127.0.0.1:2"}).upstream.pool_size == 7


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"protocol": "grpc"}, "protocol"),
        ({"upstream": {"url": "ftp://x"}}, "upstream.url"),
        ({"upstream": {"timeout_seconds": -1}}, "upstream.timeout_seconds"),
        ({"logging": {"colour": "red"}}, "logging.colour"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(**overrides)


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
