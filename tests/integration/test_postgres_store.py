"""PostgresStore against a real PostgreSQL server on loopback (tests/support/postgres.py).

Runs the store contract of tests/unit/feedback/test_store_contract.py (each test in a fresh
schema), then what only a shared server can show: two stores as two replicas, concurrent
labels matched exactly once, a server restart between put and match, reopening the store.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from app.errors import ConfigError
from app.feedback.postgres_store import PostgresStore
from app.feedback.store import Lookup, Match, PredictionStore, open_store
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.stub_upstream import free_port
from tests.unit.feedback import test_store_contract as contract
from tests.unit.feedback.test_store_contract import pred, req

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The contract, run here against PostgresStore through this module's `make_store`.
_SQLITE_ONLY = {"test_file_store_survives_reopening", "test_bad_urls_are_config_errors"}
_CONTRACT = [n for n in vars(contract) if n.startswith("test_") and n not in _SQLITE_ONLY]
assert _CONTRACT, "no contract tests found"
globals().update({n: getattr(contract, n) for n in _CONTRACT})

StoreFactory = Callable[..., PredictionStore]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One throwaway server for the module (database `infersight`)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def schema_url(pg: PostgresServer) -> Iterator[str]:
    """A URL whose unqualified tables live in a fresh, empty schema (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield pg.url(search_path=name)
    if pg.is_running():
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def make_store(schema_url: str) -> Iterator[StoreFactory]:
    """Stores on the test's schema (every store made in one test shares its table)."""
    opened: list[PredictionStore] = []

    def make(max_rows: int = 1000, ttl_seconds: float = 3600.0) -> PredictionStore:
        store = open_store(schema_url, max_rows, ttl_seconds)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_open_store_picks_postgres(make_store: StoreFactory, pg: PostgresServer) -> None:
    assert isinstance(make_store(), PostgresStore)
    store = open_store(pg.url().replace("postgresql://", "postgres://"), 10, 60.0)
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()


def test_unreachable_server_is_a_quick_config_error() -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot connect to PostgreSQL at postgresql://127\.0"):
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/db", 10, 60.0)
    assert time.monotonic() - began < 5.0


def test_credentials_stay_out_of_errors() -> None:
    with pytest.raises(ConfigError) as info:
        open_store(f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db", 10, 60.0)
    assert "hunter2" not in str(info.value)


def test_a_prediction_written_by_one_replica_is_matched_through_another(
    make_store: StoreFactory,
) -> None:
    a, b = make_store(), make_store()
    a.put([pred("r1", 0.8), pred("r2", "no", key="app-1")])
    got = b.match([Lookup("loan", "r1"), Lookup("loan", key="app-1")], 1001.0)
    assert [m.outcome for m in got] == ["matched", "matched"]
    assert got[0].prediction is not None
    assert got[0].prediction.value == 0.8
    assert [m.outcome for m in a.match([Lookup("loan", "r1")], 1002.0)] == ["duplicate"]
    assert a.count() == b.count() == 2


def _race_many(
    a: PredictionStore, b: PredictionStore, lookups_a: list[Lookup], lookups_b: list[Lookup]
) -> tuple[list[Match], list[Match]]:
    """Each store's lookups (one batch) started at once; each store's matches, in order."""
    barrier = threading.Barrier(2)
    got: dict[int, list[Match]] = {}
    errors: list[BaseException] = []

    def label(i: int, store: PredictionStore, lookups: list[Lookup]) -> None:
        try:
            barrier.wait(timeout=10)
            got[i] = store.match(lookups, 1001.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=label, args=(i, s, lk))
        for i, (s, lk) in enumerate([(a, lookups_a), (b, lookups_b)])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return got[0], got[1]


def _race(a: PredictionStore, b: PredictionStore, lookup: Lookup) -> list[str]:
    """The same lookup through both stores at once; the outcomes, sorted."""
    got_a, got_b = _race_many(a, b, [lookup], [lookup])
    return sorted(m.outcome for m in got_a + got_b)


def test_a_label_sent_to_two_replicas_at_once_matches_once(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    n = 200
    a.put([pred(f"r{i}", key=f"k{i}") for i in range(n)])
    for i in range(n):
        # Half by request id, half by business key (the latest-prediction path).
        lookup = Lookup("loan", f"r{i}") if i % 2 else Lookup("loan", key=f"k{i}")
        assert _race(a, b, lookup) == ["duplicate", "matched"], i


def test_replicas_labelling_rows_of_one_request_at_once_match_each_row_once(
    make_store: StoreFactory,
) -> None:
    """All rows share one request record: labels for different rows of it, through two replicas
    at once, all match (none is lost or refused), and a row labelled through both matches once."""
    a, b = make_store(), make_store()
    n = 40
    values: list[object] = [i / 100 for i in range(n)]
    a.put([req(f"batch{j}", values, keys=[f"b{j}-{i}" for i in range(n)]) for j in range(10)])
    for j in range(10):
        rid = f"batch{j}"
        if j % 2:  # different rows: A the even ones by id, B the odd ones by key
            got_a, got_b = _race_many(
                a,
                b,
                [Lookup("loan", rid, i) for i in range(0, n, 2)],
                [Lookup("loan", key=f"b{j}-{i}") for i in range(1, n, 2)],
            )
            assert [m.outcome for m in got_a + got_b] == ["matched"] * n, j
        else:  # every row through both, in the same order (row by row in step)
            lookups = [Lookup("loan", rid, i) for i in range(n)]
            got_a, got_b = _race_many(a, b, lookups, lookups)
            for i in range(n):
                pair = sorted([got_a[i].outcome, got_b[i].outcome])
                assert pair == ["duplicate", "matched"], (j, i)
        matched = [m.prediction for m in got_a + got_b if m.prediction is not None]
        assert sorted((p.request_id, p.row, p.value) for p in matched) == [
            (rid, i, values[i]) for i in range(n)
        ], j
        # Every row is labelled now, whichever replica is asked.
        again = b.match([Lookup("loan", rid, i) for i in range(n)], 1002.0)
        assert {m.outcome for m in again} == {"duplicate"}, j
    assert a.count() == b.count() == 10 * n


def test_a_prediction_holding_a_nul_character_is_matched(make_store: StoreFactory) -> None:
    """PostgreSQL's JSON functions refuse an escaped NUL: the whole array is read instead."""
    store = make_store()
    store.put([req("a", ["x\x00y", 0.5, "z"])])
    got = store.match([Lookup("loan", "a", 2), Lookup("loan", "a", 0)], 1001.0)
    assert [m.prediction.value for m in got if m.prediction] == ["z", "x\x00y"]


def test_concurrent_purges_count_each_record_once(make_store: StoreFactory) -> None:
    a, b = make_store(max_rows=50, ttl_seconds=100.0), make_store(max_rows=50, ttl_seconds=100.0)
    a.put([pred(f"r{i}", at=800.0 + i) for i in range(120)])
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.purge(1000.0))) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(r.expired for r in results) == 100  # at < 900
    assert sum(r.evicted for r in results) == 70
    assert a.count() == 50
    assert a.purge(1000.0).evicted == 0


def test_replicas_creating_the_table_at_once_do_not_fail(schema_url: str) -> None:
    stores: list[PredictionStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        try:
            barrier.wait(timeout=10)
            stores.append(PostgresStore(schema_url, 100, 60.0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not errors, errors
        assert len(stores) == 6
        stores[0].put([pred("a")])
        assert [s.count() for s in stores] == [1] * 6
    finally:
        for s in stores:
            s.close()


def test_the_store_keeps_its_data_across_reopening(schema_url: str) -> None:
    contract.assert_survives_reopening(lambda: PostgresStore(schema_url, 100, 3600.0))


def test_a_server_restart_between_put_and_match_reconnects(
    make_store: StoreFactory, pg: PostgresServer
) -> None:
    store = make_store()
    store.put([pred("a", value=0.3)])
    pg.restart()
    (m,) = store.match([Lookup("loan", "a")], 1001.0)
    assert m.outcome == "matched"
    assert m.prediction is not None
    assert m.prediction.value == 0.3
    pg.restart()
    store.put([pred("b")])  # a transaction on a lost connection
    pg.restart()
    assert store.purge(1001.0).expired == 0
    assert store.count() == 2


def test_a_server_that_stays_down_raises_after_one_reconnect(
    make_store: StoreFactory, pg: PostgresServer
) -> None:
    store = make_store()
    store.put([pred("a")])
    pg.stop()
    try:
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            store.match([Lookup("loan", "a")], 1001.0)
        assert time.monotonic() - began < 5.0
    finally:
        pg.start()
    # The next call reconnects to the server that is back.
    assert [m.outcome for m in store.match([Lookup("loan", "a")], 1001.0)] == ["matched"]


async def test_two_sidecars_share_one_store(schema_url: str) -> None:
    """Replica A serves the prediction, replica B receives its label: matched once, fleet-wide."""
    import aiohttp

    from app.config import FeedbackSettings, Settings, UpstreamSettings
    from tests.conftest import loan_profile
    from tests.support.sidecar import run_sidecar
    from tests.support.stub_upstream import StubUpstream
    from tests.unit.api.test_proxy import good_row, v2_request

    profile = loan_profile()
    async with StubUpstream() as up:
        settings = Settings(
            upstream=UpstreamSettings(url=up.url),
            feedback=FeedbackSettings(store=schema_url, min_rows=1),
        )
        async with (
            run_sidecar(settings, {"loan": profile}) as a,
            run_sidecar(settings, {"loan": profile}) as b,
            aiohttp.ClientSession() as http,
        ):
            for i in range(3):
                body = v2_request([good_row(), good_row()], f"r{i}")
                async with http.post(
                    f"{a.url}/v2/models/loan/infer", json=body, headers={"x-request-id": f"r{i}"}
                ) as r:
                    assert r.status == 200
            await a.app.state.infersight.feedback.recorder.flush()  # A's writes are in the store
            items = [
                {"request_id": f"r{i}", "row": j, "label": 1} for i in range(3) for j in (0, 1)
            ]
            async with http.post(f"{b.url}/feedback", json={"feedback": items}) as r:
                doc = await r.json()
            assert doc["outcomes"]["matched"] == 6, doc
            # The same labels through replica A: every one is already labelled.
            async with http.post(f"{a.url}/feedback", json={"feedback": items}) as r:
                doc = await r.json()
            assert doc["outcomes"]["duplicate"] == 6, doc
            assert b.sample("infersight_feedback_scored_total", {"model": "loan"}) == 6
            assert a.sample("infersight_feedback_scored_total", {"model": "loan"}) == 0
