"""The PostgreSQL prediction store: several sidecar replicas sharing one table.

One autocommit connection per store. Each lookup is one statement that marks its record
labelled only while it is still open (`UPDATE … WHERE state = open`), so when two replicas get
the same label one matches and the other answers `duplicate`; no lock is held between
statements, so replicas cannot deadlock. Writes and purges are short explicit transactions;
table creation and purges are serialised across replicas by advisory locks. A lost connection
(PostgreSQL restarted) is reopened once before the error is raised (`psycopg.OperationalError`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo

from app.errors import ConfigError
from app.feedback.store import (
    Lookup,
    Match,
    PredictionStore,
    PurgeResult,
    StoredPrediction,
)

OPEN, LABELLED, EXPIRED = 0, 1, 2

_T = TypeVar("_T")

# Advisory lock keys (per database): creating the table, purging.
_SCHEMA_LOCK = 0x1F5E_0001
_PURGE_LOCK = 0x1F5E_0002

_CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when the URL sets no `connect_timeout`."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS infersight_predictions (
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        "row" BIGINT NOT NULL,
        key TEXT,
        value TEXT,
        version TEXT,
        at DOUBLE PRECISION NOT NULL,
        state SMALLINT NOT NULL DEFAULT 0,
        PRIMARY KEY (model, request_id, "row")
    )""",
    """CREATE INDEX IF NOT EXISTS infersight_predictions_key
        ON infersight_predictions (model, key, at, request_id, "row") WHERE key IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS infersight_predictions_at ON infersight_predictions (at)",
)

_INSERT = (
    'INSERT INTO infersight_predictions (model, request_id, "row", key, value, version, at)'
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)

_BY_ID = (
    'SELECT model, request_id, "row", state, at FROM infersight_predictions'
    ' WHERE model = %(model)s AND request_id = %(request_id)s AND "row" = %(row)s'
)
# The latest prediction for the key (ties broken the same way every time).
_BY_KEY = (
    'SELECT model, request_id, "row", state, at FROM infersight_predictions'
    " WHERE model = %(model)s AND key = %(key)s"
    ' ORDER BY at DESC, request_id DESC, "row" DESC LIMIT 1'
)
# The record as of this statement's snapshot, and whether this statement labelled it. A
# concurrent statement that labelled it first makes the UPDATE skip it (re-checked after the
# row lock is released), so `hit` is empty.
_MATCH = """
WITH target AS ({find}),
hit AS (
    UPDATE infersight_predictions AS p SET state = 1
    FROM target
    WHERE p.model = target.model AND p.request_id = target.request_id
        AND p."row" = target."row" AND p.state = 0 AND p.at >= %(oldest)s
    RETURNING p.key, p.value, p.version, true AS labelled
)
SELECT target.model, target.request_id, target."row", target.state, target.at,
    hit.key, hit.value, hit.version, coalesce(hit.labelled, false)
FROM target LEFT JOIN hit ON true
"""
_MATCH_BY_ID = _MATCH.format(find=_BY_ID)
_MATCH_BY_KEY = _MATCH.format(find=_BY_KEY)


def _describe(params: dict[str, Any]) -> str:
    """The server and database of parsed URL parameters, without credentials."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or ''}"


class PostgresStore(PredictionStore):
    """Predictions in the table `infersight_predictions` (created if missing) of a PostgreSQL
    database; the URL's `options=-csearch_path=…` picks the schema."""

    def __init__(self, url: str, max_rows: int, ttl_seconds: float) -> None:
        super().__init__(max_rows, ttl_seconds)
        self._url = url
        try:
            params = conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(f"feedback.store: invalid PostgreSQL URL: {exc}") from None
        self._where = _describe(params)
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = _CONNECT_TIMEOUT
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise ConfigError(
                f"feedback.store: cannot connect to PostgreSQL at {self._where}: {exc}"
            ) from None
        try:
            self._create_schema()
        except psycopg.Error as exc:
            self._conn.close()
            raise ConfigError(
                f"feedback.store: cannot create the predictions table at {self._where}: {exc}"
            ) from None

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)

    def _create_schema(self) -> None:
        # CREATE … IF NOT EXISTS still fails when two sessions create the same table at once.
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _run(self, op: Callable[[psycopg.Connection[tuple[Any, ...]]], _T]) -> _T:
        """Run `op`; when the connection was lost, reconnect once and run it again."""
        try:
            return op(self._conn)
        except psycopg.OperationalError:
            if not (self._conn.broken or self._conn.closed):
                raise
        self._conn.close()
        self._conn = self._connect()
        return op(self._conn)

    def put(self, rows: Sequence[StoredPrediction]) -> None:
        if not rows:
            return
        # Key order: two replicas inserting overlapping rows lock them in the same order.
        params = [
            (r.model, r.request_id, r.row, r.key, json.dumps(r.value), r.version, r.at)
            for r in sorted(rows, key=lambda r: (r.model, r.request_id, r.row))
        ]

        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT, params)

        self._run(op)

    def match(self, lookups: Sequence[Lookup], now: float) -> list[Match]:
        oldest = now - self.ttl_seconds
        return [self._run(partial(self._match_one, lookup=lk, oldest=oldest)) for lk in lookups]

    def _match_one(
        self, conn: psycopg.Connection[tuple[Any, ...]], lookup: Lookup, oldest: float
    ) -> Match:
        if lookup.request_id is None and lookup.key is None:
            return Match("unknown")
        statement = _MATCH_BY_ID if lookup.request_id is not None else _MATCH_BY_KEY
        params = {
            "model": lookup.model,
            "request_id": lookup.request_id,
            "row": lookup.row,
            "key": lookup.key,
            "oldest": oldest,
        }
        for _ in range(3):
            found = conn.execute(statement, params).fetchone()
            if found is None:
                return Match("unknown")
            model, request_id, row, state, at, key, value, version, hit = found
            if hit:
                return Match(
                    "matched",
                    StoredPrediction(
                        model=model,
                        request_id=request_id,
                        row=int(row),
                        value=json.loads(value) if value is not None else None,
                        at=float(at),
                        key=key,
                        version=version,
                    ),
                )
            if state == LABELLED:
                return Match("duplicate")
            if state == EXPIRED or at < oldest:
                return Match("expired")
            # Open when this statement began, yet another replica changed it first: look again
            # (a new statement sees what that replica committed).
        return Match("duplicate")

    def purge(self, now: float) -> PurgeResult:
        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> PurgeResult:
            result = PurgeResult()
            with conn.transaction():
                # One replica purges at a time; the others skip (it does their work too).
                locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_PURGE_LOCK,))
                row = locked.fetchone()
                if row is None or not row[0]:
                    return result
                cur = conn.execute(
                    "UPDATE infersight_predictions SET state = %s, value = NULL"
                    " WHERE at < %s AND state = %s",
                    (EXPIRED, now - self.ttl_seconds, OPEN),
                )
                result.expired = max(cur.rowcount, 0)
                counted = conn.execute("SELECT COUNT(*) FROM infersight_predictions").fetchone()
                excess = int(counted[0]) - self.max_rows if counted is not None else 0
                if excess > 0:
                    cur = conn.execute(
                        'DELETE FROM infersight_predictions WHERE (model, request_id, "row") IN'
                        ' (SELECT model, request_id, "row" FROM infersight_predictions'
                        " ORDER BY at LIMIT %s)",
                        (excess,),
                    )
                    result.evicted = max(cur.rowcount, 0)
            return result

        return self._run(op)

    def count(self) -> int:
        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            found = conn.execute("SELECT COUNT(*) FROM infersight_predictions").fetchone()
            return int(found[0]) if found is not None else 0

        return self._run(op)

    def close(self) -> None:
        self._conn.close()
