"""The settings a real `infersight serve` command line starts with, without starting it."""

from __future__ import annotations

import os

import pytest

from app.cli import build_parser
from app.cli import serve_settings as settings_of
from app.config import Settings


def serve_settings(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str] | None = None
) -> Settings:
    """The settings `infersight <argv>` builds (the real parser, flags, environment and
    settings checks), with only `env` as INFERSIGHT_* environment."""
    for name in [n for n in os.environ if n.startswith("INFERSIGHT_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(argv)
    assert args.func.__name__ == "cmd_serve", argv
    return settings_of(args)
