"""The prediction store behind `POST /feedback`: what it keeps, how a label finds its prediction.

A store keeps one record per answered request (its rows' predictions together: one write per
request, however many rows), keyed by (model, request id), and optionally each row's business
key. A label addresses one row and is matched at most once: the first match marks the row
labelled, and a second label for it is a `duplicate`. Rows older than the TTL answer `expired`
(their request is kept as a tombstone until evicted, so late labels are told apart from unknown
ones); past the row cap the oldest requests are evicted. Implementations are synchronous and are
called from one thread (`app/feedback/recorder.py`); `open_store` picks one from a URL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import ConfigError

Outcome = Literal["matched", "unknown", "duplicate", "expired", "invalid"]
OUTCOMES: tuple[Outcome, ...] = ("matched", "unknown", "duplicate", "expired", "invalid")


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """One answered request's predictions, as written to the store."""

    model: str
    request_id: str
    values: list[Any]
    """The monitored output of each row (JSON-serialisable: number, string, bool or None)."""
    at: float
    """Unix time of the answer."""
    keys: list[str | None] | None = None
    """Each row's business key, when `feedback.key_field` is configured."""
    version: str | None = None
    """The model version that answered."""


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """One predicted row, as a match returns it."""

    model: str
    request_id: str
    row: int
    value: Any
    """The monitored output for this row (JSON-serialisable: number, string, bool or None)."""
    at: float
    """Unix time of the prediction."""
    key: str | None = None
    """The business key of the row, when `feedback.key_field` is configured."""
    version: str | None = None
    """The model version that answered."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """One label's address: by request id and row, or by business key (latest prediction)."""

    model: str
    request_id: str | None = None
    row: int = 0
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """The outcome for one lookup; `prediction` is set when `matched`."""

    outcome: Outcome
    prediction: StoredPrediction | None = None


@dataclass(slots=True)
class PurgeResult:
    expired: int = 0
    """Unlabelled rows that passed their TTL since the last purge (now tombstones)."""
    evicted: int = 0
    """Rows deleted (with their requests) to stay under the row cap."""


class PredictionStore(ABC):
    """Keeps predictions until their label arrives. Not thread-safe: one caller thread."""

    def __init__(self, max_rows: int, ttl_seconds: float) -> None:
        self.max_rows = max_rows
        self.ttl_seconds = ttl_seconds

    @abstractmethod
    def put(self, requests: Sequence[StoredRequest]) -> None:
        """Store answered requests; one that already exists (same model and request id) is
        kept unchanged."""

    @abstractmethod
    def match(self, lookups: Sequence[Lookup], now: float) -> list[Match]:
        """One match per lookup, in order, marking matched records as labelled (atomically:
        two replicas never both match one record)."""

    @abstractmethod
    def purge(self, now: float) -> PurgeResult:
        """Turn records past the TTL into tombstones and evict the oldest past the row cap."""

    @abstractmethod
    def count(self) -> int:
        """Rows held (tombstones included)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


def open_store(url: str, max_rows: int, ttl_seconds: float) -> PredictionStore:
    """The store for a URL: `sqlite:PATH`, `sqlite::memory:` or `postgresql://…`.

    Raises:
        ConfigError: an unknown scheme, or a store that cannot be opened.
    """
    if url.startswith("sqlite:"):
        from app.feedback.sqlite_store import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:"), max_rows, ttl_seconds)
    if url.startswith(("postgresql://", "postgres://")):
        from app.feedback.postgres_store import PostgresStore

        return PostgresStore(url, max_rows, ttl_seconds)
    raise ConfigError(
        f"feedback.store must be sqlite:PATH, sqlite::memory: or postgresql://…, not {url!r}"
    )
