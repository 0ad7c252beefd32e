"""The SQLite prediction store: one replica, survives a restart (WAL, crash-safe).

Three tables: one row per answered request (its predictions as one JSON array), the rows that
already have a label, and — only when business keys are configured — each row's key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from app.errors import ConfigError
from app.feedback.store import (
    Lookup,
    Match,
    PredictionStore,
    PurgeResult,
    StoredPrediction,
    StoredRequest,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS infersight_requests (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    predictions BLOB,
    version TEXT,
    at REAL NOT NULL,
    expired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, request_id)
);
CREATE INDEX IF NOT EXISTS infersight_requests_at ON infersight_requests (at);
CREATE TABLE IF NOT EXISTS infersight_labelled (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    PRIMARY KEY (model, request_id, row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS infersight_keys (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS infersight_keys_key ON infersight_keys (model, key, at);
CREATE INDEX IF NOT EXISTS infersight_keys_request ON infersight_keys (model, request_id);
"""


class SQLiteStore(PredictionStore):
    """Predictions in one SQLite file (or `:memory:`)."""

    def __init__(self, path: str, max_rows: int, ttl_seconds: float) -> None:
        super().__init__(max_rows, ttl_seconds)
        self.path = path
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError(f"feedback.store: directory {parent} does not exist")
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"feedback.store: cannot open SQLite database {path}: {exc}"
            ) from None

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)

    def put(self, requests: Sequence[StoredRequest]) -> None:
        if not requests:
            return
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO infersight_requests"
                " (model, request_id, n_rows, predictions, version, at) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.model, r.request_id, len(r.values), _dumps(r.values), r.version, r.at)
                    for r in requests
                ],
            )
            keyed = [
                (r.model, str(k), r.request_id, i, r.at)
                for r in requests
                if r.keys is not None
                for i, k in enumerate(r.keys)
                if k is not None
            ]
            if keyed:
                self.db.executemany(
                    "INSERT INTO infersight_keys (model, key, request_id, row, at)"
                    " SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM infersight_keys"
                    " WHERE model = ?1 AND request_id = ?3 AND row = ?4)",
                    keyed,
                )

    def _address(self, lookup: Lookup) -> tuple[str, int] | None:
        if lookup.request_id is not None:
            return lookup.request_id, lookup.row
        found: tuple[str, int] | None = self.db.execute(
            "SELECT request_id, row FROM infersight_keys WHERE model = ? AND key = ?"
            " ORDER BY at DESC, rowid DESC LIMIT 1",
            (lookup.model, lookup.key),
        ).fetchone()
        return found

    def match(self, lookups: Sequence[Lookup], now: float) -> list[Match]:
        out: list[Match] = []
        oldest = now - self.ttl_seconds
        with self._transaction():
            for lookup in lookups:
                out.append(self._match_one(lookup, oldest))
        return out

    def _match_one(self, lookup: Lookup, oldest: float) -> Match:
        address = self._address(lookup)
        if address is None:
            return Match("unknown")
        request_id, row = address
        found = self.db.execute(
            "SELECT n_rows, predictions, version, at, expired FROM infersight_requests"
            " WHERE model = ? AND request_id = ?",
            (lookup.model, request_id),
        ).fetchone()
        if found is None or not 0 <= row < found[0]:
            return Match("unknown")
        _, predictions, version, at, expired = found
        labelled = self.db.execute(
            "SELECT 1 FROM infersight_labelled WHERE model = ? AND request_id = ? AND row = ?",
            (lookup.model, request_id, row),
        ).fetchone()
        if labelled is not None:
            return Match("duplicate")
        if expired or at < oldest:
            return Match("expired")
        self.db.execute(
            "INSERT INTO infersight_labelled (model, request_id, row) VALUES (?, ?, ?)",
            (lookup.model, request_id, row),
        )
        values: list[Any] = orjson.loads(predictions)
        return Match(
            "matched",
            StoredPrediction(
                model=lookup.model,
                request_id=request_id,
                row=row,
                value=values[row],
                at=float(at),
                key=lookup.key,
                version=version,
            ),
        )

    def purge(self, now: float) -> PurgeResult:
        result = PurgeResult()
        cutoff = now - self.ttl_seconds
        with self._transaction():
            (rows, labelled) = self.db.execute(
                "SELECT COALESCE(SUM(n_rows), 0), COALESCE(SUM((SELECT COUNT(*)"
                " FROM infersight_labelled l WHERE l.model = r.model"
                " AND l.request_id = r.request_id)), 0)"
                " FROM infersight_requests r WHERE at < ? AND expired = 0",
                (cutoff,),
            ).fetchone()
            result.expired = int(rows) - int(labelled)
            self.db.execute(
                "UPDATE infersight_requests SET expired = 1, predictions = NULL"
                " WHERE at < ? AND expired = 0",
                (cutoff,),
            )
            result.evicted = self._evict()
        return result

    def _evict(self) -> int:
        excess = self._rows() - self.max_rows
        evicted = 0
        while excess > 0:
            oldest = self.db.execute(
                "SELECT rowid, model, request_id, n_rows FROM infersight_requests"
                " ORDER BY at, rowid LIMIT 1000"
            ).fetchall()
            if not oldest:
                break
            doomed = []
            for rowid, model, request_id, n_rows in oldest:
                if excess <= 0:
                    break
                doomed.append((rowid, model, request_id))
                excess -= n_rows
                evicted += n_rows
            self.db.executemany(
                "DELETE FROM infersight_requests WHERE rowid = ?", [(d[0],) for d in doomed]
            )
            pairs = [(d[1], d[2]) for d in doomed]
            self.db.executemany(
                "DELETE FROM infersight_labelled WHERE model = ? AND request_id = ?", pairs
            )
            self.db.executemany(
                "DELETE FROM infersight_keys WHERE model = ? AND request_id = ?", pairs
            )
        return evicted

    def _rows(self) -> int:
        (n,) = self.db.execute(
            "SELECT COALESCE(SUM(n_rows), 0) FROM infersight_requests"
        ).fetchone()
        return int(n)

    def count(self) -> int:
        return self._rows()

    def close(self) -> None:
        self.db.close()


def _dumps(values: list[Any]) -> bytes:
    """Predictions as JSON (NaN/Inf become null; anything unusual its string)."""
    return orjson.dumps(values, default=str)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
