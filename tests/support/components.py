"""Real components the tests need: missing ones fail the test in CI (`CI=true`), skip elsewhere."""

from __future__ import annotations

import os
import shutil

import pytest


def missing(reason: str) -> None:
    """Fail under CI, skip otherwise."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_binary(binary: str, package: str) -> str:
    """The binary's path on PATH; a missing one fails in CI and skips elsewhere."""
    path = shutil.which(binary)
    if path is None:
        missing(f"{binary} is not installed (Debian package: {package})")
        raise AssertionError("unreachable")
    return path
