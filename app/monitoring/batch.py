"""Columnar views of one request and one response, as the protocol codecs decode them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Batch:
    """The decoded inputs of one request: one list of raw values per column.

    Values are what the wire carried (int, float, str, bool, None, or nested lists for
    values the codec could not flatten); the validator decides what they mean.
    """

    n_rows: int
    columns: dict[str, list[Any]]
    """Column name → one value per row. Names not in the profile are 'unknown features'."""
    source: str = ""
    """Which wire shape the codec recognised (e.g. `v2:tensor-per-feature`), for logs."""


@dataclass(slots=True)
class Predictions:
    """The decoded outputs of one response for the monitored output."""

    values: list[Any]
    """One value per row (scalar; the configured column of 2-D outputs)."""
    output_name: str
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
