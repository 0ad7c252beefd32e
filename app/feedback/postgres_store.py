"""The PostgreSQL prediction store: several sidecar replicas sharing one database.

The tables are those of the SQLite store: one row per answered request (its predictions as one
JSON array), the rows that already have a label, and each row's business key when keys are
configured. One autocommit connection per store, and every operation but a purge is a single
statement (its own transaction):

- `put` writes a batch in one statement, in (model, request id) order so that two replicas
  writing overlapping batches lock them in the same order;
- a lookup takes a share lock on its request (so a purge cannot expire or evict it meanwhile)
  and inserts its row into the labelled table with `ON CONFLICT DO NOTHING`: when two replicas
  get the same label, exactly one insert succeeds (`matched`), and the other, having waited for
  it, answers `duplicate`. Lookups lock one request each and hold nothing between statements,
  so replicas cannot deadlock.

Table creation and purges are serialised across replicas by advisory locks (a replica that finds
a purge running skips its own). A lost connection (PostgreSQL restarted) is reopened once before
the error is raised (`psycopg.OperationalError`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import conninfo

from app.errors import ConfigError
from app.feedback.store import (
    Lookup,
    Match,
    PredictionStore,
    PurgeResult,
    StoredPrediction,
    StoredRequest,
)

_T = TypeVar("_T")
_Conn = psycopg.Connection[tuple[Any, ...]]

# Advisory lock keys (per database): creating the tables, purging.
_SCHEMA_LOCK = 0x1F5E_0001
_PURGE_LOCK = 0x1F5E_0002

_CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when the URL sets no `connect_timeout`."""

_MAX_ROW = 2**31 - 1
"""Rows are INTEGER; a lookup past this is `unknown` without asking the server."""

_EVICT_BATCH = 1000

# `seq` orders requests (and keys) written at the same `at` by insertion.
_SCHEMA = (
    "CREATE SEQUENCE IF NOT EXISTS infersight_requests_seq",
    """CREATE TABLE IF NOT EXISTS infersight_requests (
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        n_rows INTEGER NOT NULL,
        predictions TEXT,
        version TEXT,
        at DOUBLE PRECISION NOT NULL,
        expired BOOLEAN NOT NULL DEFAULT false,
        seq BIGINT NOT NULL DEFAULT nextval('infersight_requests_seq'),
        PRIMARY KEY (model, request_id)
    )""",
    "CREATE INDEX IF NOT EXISTS infersight_requests_at ON infersight_requests (at, seq)",
    """CREATE TABLE IF NOT EXISTS infersight_labelled (
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        "row" INTEGER NOT NULL,
        PRIMARY KEY (model, request_id, "row")
    )""",
    """CREATE TABLE IF NOT EXISTS infersight_keys (
        model TEXT NOT NULL,
        key TEXT NOT NULL,
        request_id TEXT NOT NULL,
        "row" INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (model, request_id, "row")
    )""",
    "CREATE INDEX IF NOT EXISTS infersight_keys_key ON infersight_keys (model, key, at, seq)",
)

# `seq` is drawn in the caller's order (a materialised CTE), rows are inserted in key order;
# only the requests this statement inserted get their keys.
_PUT = """
WITH batch AS MATERIALIZED (
    SELECT nextval('infersight_requests_seq') AS seq, b.*
    FROM unnest(%(models)s::text[], %(ids)s::text[], %(n_rows)s::int[], %(predictions)s::text[],
        %(versions)s::text[], %(ats)s::float8[])
        AS b(model, request_id, n_rows, predictions, version, at)
),
added AS (
    INSERT INTO infersight_requests (model, request_id, n_rows, predictions, version, at, seq)
    SELECT model, request_id, n_rows, predictions, version, at, seq FROM batch
    ORDER BY model, request_id
    ON CONFLICT DO NOTHING
    RETURNING model, request_id
)
INSERT INTO infersight_keys (model, key, request_id, "row", at)
SELECT k.model, k.key, k.request_id, k."row", k.at
FROM unnest(%(k_models)s::text[], %(k_keys)s::text[], %(k_ids)s::text[], %(k_rows)s::int[],
    %(k_ats)s::float8[]) WITH ORDINALITY AS k(model, key, request_id, "row", at, ord)
JOIN added ON added.model = k.model AND added.request_id = k.request_id
ORDER BY k.ord
ON CONFLICT DO NOTHING
"""

_BY_ID = 'SELECT %(request_id)s::text AS request_id, %(row)s::int AS "row"'
# The latest prediction for the key: latest `at`, then latest written.
_BY_KEY = (
    'SELECT request_id, "row" FROM infersight_keys WHERE model = %(model)s AND key = %(key)s'
    " ORDER BY at DESC, seq DESC LIMIT 1"
)
# One lookup. `req` share-locks the request (waiting for a purge that is expiring or evicting it,
# then reading what it left); `hit` labels the row when it is open. A concurrent statement that
# labelled it first makes the insert wait for it and do nothing, so `hit` is empty while the
# row looked open. The row's value is cut out by the server unless the array holds an escaped
# NUL, which PostgreSQL's JSON functions refuse: then the whole array comes back.
_MATCH = """
WITH target AS ({find}),
req AS (
    SELECT r.request_id, t."row", r.n_rows, r.version, r.at, r.expired, r.predictions
    FROM infersight_requests AS r JOIN target AS t ON r.request_id = t.request_id
    WHERE r.model = %(model)s
    FOR SHARE OF r
),
hit AS (
    INSERT INTO infersight_labelled (model, request_id, "row")
    SELECT %(model)s, request_id, "row" FROM req
    WHERE "row" >= 0 AND "row" < n_rows AND NOT expired AND at >= %(oldest)s
    ON CONFLICT DO NOTHING
    RETURNING true AS labelled
)
SELECT req.request_id, req."row", req.n_rows, req.version, req.at, req.expired,
    EXISTS (SELECT FROM hit),
    EXISTS (SELECT FROM infersight_labelled AS l WHERE l.model = %(model)s
        AND l.request_id = req.request_id AND l."row" = req."row"),
    CASE WHEN EXISTS (SELECT FROM hit) THEN
        CASE WHEN strpos(req.predictions, '\\u0000') = 0
            THEN (req.predictions::json -> req."row")::text
            ELSE req.predictions END
    END,
    strpos(req.predictions, '\\u0000') > 0
FROM req
"""
_MATCH_BY_ID = _MATCH.format(find=_BY_ID)
_MATCH_BY_KEY = _MATCH.format(find=_BY_KEY)

# Waits for lookups holding a share lock on a request about to expire, so that the count below
# sees their labels, and keeps new ones out until the purge commits.
_LOCK_EXPIRING = (
    "SELECT count(*) FROM (SELECT FROM infersight_requests WHERE at < %s AND NOT expired"
    " FOR NO KEY UPDATE) AS expiring"
)
_EXPIRE = """
WITH doomed AS (
    UPDATE infersight_requests SET expired = true, predictions = NULL
    WHERE at < %s AND NOT expired
    RETURNING model, request_id, n_rows
)
SELECT coalesce(sum(n_rows), 0) - (SELECT count(*) FROM infersight_labelled AS l
    JOIN doomed AS d ON l.model = d.model AND l.request_id = d.request_id)
FROM doomed
"""
_ROWS = "SELECT coalesce(sum(n_rows), 0) FROM infersight_requests"
_OLDEST = (
    "SELECT model, request_id, n_rows, at, seq FROM infersight_requests"
    " WHERE (at, seq) > (%s, %s) ORDER BY at, seq LIMIT %s"
)
_EVICT = (
    "WITH doomed AS (SELECT * FROM unnest(%(models)s::text[], %(ids)s::text[])"
    " AS d(model, request_id))"
    " DELETE FROM {table} AS t USING doomed"
    " WHERE t.model = doomed.model AND t.request_id = doomed.request_id"
)


def _describe(params: dict[str, Any]) -> str:
    """The server and database of parsed URL parameters, without credentials."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or ''}"


def _dumps(values: list[Any]) -> str:
    """Predictions as JSON (NaN/Inf become null; anything unusual its string)."""
    return orjson.dumps(values, default=str).decode()


class PostgresStore(PredictionStore):
    """Predictions in the tables `infersight_requests`, `infersight_labelled` and
    `infersight_keys` (created if missing) of a PostgreSQL database; the URL's
    `options=-csearch_path=…` picks the schema."""

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
                f"feedback.store: cannot create the prediction tables at {self._where}: {exc}"
            ) from None

    def _connect(self) -> _Conn:
        return psycopg.connect(self._url, autocommit=True, **self._connect_kwargs)

    def _create_schema(self) -> None:
        # CREATE … IF NOT EXISTS still fails when two sessions create the same table at once.
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _run(self, op: Callable[[_Conn], _T]) -> _T:
        """Run `op`; when the connection was lost, reconnect once and run it again."""
        try:
            return op(self._conn)
        except psycopg.OperationalError:
            if not (self._conn.broken or self._conn.closed):
                raise
        self._conn.close()
        self._conn = self._connect()
        return op(self._conn)

    def put(self, requests: Sequence[StoredRequest]) -> None:
        if not requests:
            return
        # The first of a request written twice in one batch wins, as across batches.
        first: dict[tuple[str, str], StoredRequest] = {}
        for r in requests:
            first.setdefault((r.model, r.request_id), r)
        batch = list(first.values())
        keyed = [
            (r.model, k, r.request_id, i, r.at)
            for r in batch
            if r.keys is not None
            for i, k in enumerate(r.keys)
            if k is not None
        ]
        params = {
            "models": [r.model for r in batch],
            "ids": [r.request_id for r in batch],
            "n_rows": [len(r.values) for r in batch],
            "predictions": [_dumps(r.values) for r in batch],
            "versions": [r.version for r in batch],
            "ats": [float(r.at) for r in batch],
            "k_models": [k[0] for k in keyed],
            "k_keys": [str(k[1]) for k in keyed],
            "k_ids": [k[2] for k in keyed],
            "k_rows": [k[3] for k in keyed],
            "k_ats": [float(k[4]) for k in keyed],
        }

        def op(conn: _Conn) -> None:
            conn.execute(_PUT, params)

        self._run(op)

    def match(self, lookups: Sequence[Lookup], now: float) -> list[Match]:
        oldest = now - self.ttl_seconds
        return [self._run(partial(self._match_one, lookup=lk, oldest=oldest)) for lk in lookups]

    def _match_one(self, conn: _Conn, lookup: Lookup, oldest: float) -> Match:
        if lookup.request_id is None and lookup.key is None:
            return Match("unknown")
        if lookup.request_id is not None and not 0 <= lookup.row <= _MAX_ROW:
            return Match("unknown")
        statement = _MATCH_BY_ID if lookup.request_id is not None else _MATCH_BY_KEY
        params = {
            "model": lookup.model,
            "request_id": lookup.request_id,
            "row": lookup.row,
            "key": lookup.key,
            "oldest": oldest,
        }
        found = conn.execute(statement, params).fetchone()
        if found is None:
            return Match("unknown")
        request_id, row, n_rows, version, at, expired, hit, labelled, value, whole = found
        if not 0 <= row < n_rows:
            return Match("unknown")
        if hit:
            decoded: Any = orjson.loads(value)
            return Match(
                "matched",
                StoredPrediction(
                    model=lookup.model,
                    request_id=request_id,
                    row=int(row),
                    value=decoded[row] if whole else decoded,
                    at=float(at),
                    key=lookup.key,
                    version=version,
                ),
            )
        if labelled:
            return Match("duplicate")
        if expired or at < oldest:
            return Match("expired")
        # Open as of this statement's snapshot, yet the insert found the row labelled: another
        # replica labelled it meanwhile.
        return Match("duplicate")

    def purge(self, now: float) -> PurgeResult:
        cutoff = now - self.ttl_seconds

        def op(conn: _Conn) -> PurgeResult:
            result = PurgeResult()
            with conn.transaction():
                # One replica purges at a time; the others skip (it does their work too).
                locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_PURGE_LOCK,))
                row = locked.fetchone()
                if row is None or not row[0]:
                    return result
                conn.execute(_LOCK_EXPIRING, (cutoff,))
                expired = conn.execute(_EXPIRE, (cutoff,)).fetchone()
                result.expired = int(expired[0]) if expired is not None else 0
                result.evicted = self._evict(conn)
            return result

        return self._run(op)

    def _evict(self, conn: _Conn) -> int:
        """Delete the oldest requests (by `at`, then insertion) until at most `max_rows` rows
        are held; the rows deleted."""
        total = conn.execute(_ROWS).fetchone()
        excess = (int(total[0]) if total is not None else 0) - self.max_rows
        models: list[str] = []
        ids: list[str] = []
        evicted = 0
        after: tuple[float, int] = (float("-inf"), -1)
        while excess > 0:
            oldest = conn.execute(_OLDEST, (*after, _EVICT_BATCH)).fetchall()
            if not oldest:
                break
            for model, request_id, n_rows, at, seq in oldest:
                if excess <= 0:
                    break
                models.append(model)
                ids.append(request_id)
                excess -= n_rows
                evicted += n_rows
                after = (at, seq)
        if not models:
            return 0
        doomed = {"models": models, "ids": ids}
        # The requests first: a lookup holding one of them finishes before its labels go.
        for table in ("infersight_requests", "infersight_labelled", "infersight_keys"):
            conn.execute(_EVICT.format(table=table), doomed)
        return evicted

    def count(self) -> int:
        def op(conn: _Conn) -> int:
            found = conn.execute(_ROWS).fetchone()
            return int(found[0]) if found is not None else 0

        return self._run(op)

    def close(self) -> None:
        self._conn.close()
