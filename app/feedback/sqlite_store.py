"""The SQLite prediction store: one replica, survives a restart (WAL, crash-safe)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from app.errors import ConfigError
from app.feedback.store import (
    Lookup,
    Match,
    PredictionStore,
    PurgeResult,
    StoredPrediction,
)

OPEN, LABELLED, EXPIRED = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS infersight_predictions (
    model TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    key TEXT,
    value TEXT,
    version TEXT,
    at REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, request_id, row)
);
CREATE INDEX IF NOT EXISTS infersight_predictions_key
    ON infersight_predictions (model, key, at) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS infersight_predictions_at ON infersight_predictions (at);
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

    def put(self, rows: Sequence[StoredPrediction]) -> None:
        if not rows:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO infersight_predictions"
                " (model, request_id, row, key, value, version, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.model, r.request_id, r.row, r.key, json.dumps(r.value), r.version, r.at)
                    for r in rows
                ],
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _find(self, lookup: Lookup) -> tuple[object, ...] | None:
        cols = "model, request_id, row, key, value, version, at, state"
        if lookup.request_id is not None:
            cur = self.db.execute(
                f"SELECT {cols} FROM infersight_predictions"
                " WHERE model = ? AND request_id = ? AND row = ?",
                (lookup.model, lookup.request_id, lookup.row),
            )
        else:
            cur = self.db.execute(
                f"SELECT {cols} FROM infersight_predictions"
                " WHERE model = ? AND key = ? ORDER BY at DESC LIMIT 1",
                (lookup.model, lookup.key),
            )
        row: tuple[object, ...] | None = cur.fetchone()
        return row

    def match(self, lookups: Sequence[Lookup], now: float) -> list[Match]:
        out: list[Match] = []
        oldest = now - self.ttl_seconds
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for lookup in lookups:
                found = self._find(lookup)
                if found is None:
                    out.append(Match("unknown"))
                    continue
                model, request_id, row, key, value, version, at, state = found
                assert isinstance(at, float)
                if state == LABELLED:
                    out.append(Match("duplicate"))
                elif state == EXPIRED or at < oldest:
                    out.append(Match("expired"))
                else:
                    self.db.execute(
                        "UPDATE infersight_predictions SET state = ?"
                        " WHERE model = ? AND request_id = ? AND row = ?",
                        (LABELLED, model, request_id, row),
                    )
                    out.append(
                        Match(
                            "matched",
                            StoredPrediction(
                                model=str(model),
                                request_id=str(request_id),
                                row=int(row),  # type: ignore[call-overload]
                                value=json.loads(str(value)) if value is not None else None,
                                at=at,
                                key=key if isinstance(key, str) else None,
                                version=version if isinstance(version, str) else None,
                            ),
                        )
                    )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return out

    def purge(self, now: float) -> PurgeResult:
        result = PurgeResult()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "UPDATE infersight_predictions SET state = ?, value = NULL"
                " WHERE at < ? AND state = ?",
                (EXPIRED, now - self.ttl_seconds, OPEN),
            )
            result.expired = max(cur.rowcount, 0)
            (count,) = self.db.execute("SELECT COUNT(*) FROM infersight_predictions").fetchone()
            excess = int(count) - self.max_rows
            if excess > 0:
                cur = self.db.execute(
                    "DELETE FROM infersight_predictions WHERE rowid IN"
                    " (SELECT rowid FROM infersight_predictions ORDER BY at LIMIT ?)",
                    (excess,),
                )
                result.evicted = max(cur.rowcount, 0)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def count(self) -> int:
        (n,) = self.db.execute("SELECT COUNT(*) FROM infersight_predictions").fetchone()
        return int(n)

    def close(self) -> None:
        self.db.close()
