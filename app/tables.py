"""Reading training data files (CSV, Parquet) into plain columns for the profile builder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from app.errors import ProfileError


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, as `sha256:<hex>`."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def read_table(path: Path) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Read a CSV or Parquet file into columns of Python values (missing → None) and dtypes.

    Raises:
        ProfileError: the file is missing, of an unknown type, or unreadable.
    """
    import pandas as pd

    if not path.exists():
        raise ProfileError("data file not found", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            df = pd.read_csv(path)
        else:
            raise ProfileError("data must be .csv or .parquet", source=str(path))
    except ProfileError:
        raise
    except Exception as exc:  # pandas raises many types for unreadable files
        raise ProfileError(f"cannot read data: {exc}", source=str(path)) from None
    columns: dict[str, list[Any]] = {}
    dtypes: dict[str, str] = {}
    for name in df.columns:
        series = df[name]
        dtypes[str(name)] = str(series.dtype)
        values = series.astype(object).where(series.notna(), None).tolist()
        columns[str(name)] = values
    return columns, dtypes
