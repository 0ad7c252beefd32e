"""The settings a real `infersight serve` command line starts with, without starting it."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.cli import main
from app.config import Settings


class _Started(Exception):
    """Raised instead of building the app: `infersight serve` got that far."""


def serve_settings(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str] | None = None
) -> Settings:
    """The settings `infersight <argv>` builds, with only `env` as INFERSIGHT_* environment:
    the real CLI and settings checks run, and `create_app` is stopped before anything starts."""
    import app.main

    seen: list[Settings] = []

    def create_app(settings: Settings, **_: Any) -> Any:
        seen.append(settings)
        raise _Started

    monkeypatch.setattr(app.main, "create_app", create_app)
    for name in [n for n in os.environ if n.startswith("INFERSIGHT_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    try:
        code = main(argv)
    except _Started:
        return seen[0]
    pytest.fail(f"infersight {' '.join(argv)} exited {code} before starting (see stderr)")
