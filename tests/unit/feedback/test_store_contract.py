"""The contract every prediction store keeps (SQLite here; PostgreSQL in tests/integration)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.feedback.store import Lookup, PredictionStore, StoredRequest, open_store

StoreFactory = Callable[..., PredictionStore]


@pytest.fixture(params=["memory", "file"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[PredictionStore] = []

    def make(max_rows: int = 1000, ttl_seconds: float = 3600.0) -> PredictionStore:
        url = "sqlite::memory:" if request.param == "memory" else f"sqlite:{tmp_path / 'fb.db'}"
        store = open_store(url, max_rows, ttl_seconds)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def pred(rid: str, value: object = 1, at: float = 1000.0, key: str | None = None) -> StoredRequest:
    """A one-row request."""
    return StoredRequest(
        "loan", rid, [value], at, keys=None if key is None else [key], version="v1"
    )


def req(
    rid: str, values: list[object], at: float = 1000.0, keys: list[str | None] | None = None
) -> StoredRequest:
    return StoredRequest("loan", rid, values, at, keys=keys, version="v1")


def test_match_by_request_id_and_row(make_store: StoreFactory) -> None:
    store = make_store()
    store.put([req("a", [0.25, "yes"]), pred("b", None)])
    got = store.match([Lookup("loan", "a", 1), Lookup("loan", "a", 0), Lookup("loan", "b")], 1001.0)
    assert [m.outcome for m in got] == ["matched"] * 3
    assert got[0].prediction is not None
    assert got[0].prediction.value == "yes"
    assert got[1].prediction is not None
    assert got[1].prediction.value == 0.25
    assert got[1].prediction.version == "v1"
    assert got[1].prediction.row == 0
    assert got[2].prediction is not None
    assert got[2].prediction.value is None


def test_unknown_duplicate_and_other_model(make_store: StoreFactory) -> None:
    store = make_store()
    store.put([pred("a")])
    first = store.match([Lookup("loan", "a"), Lookup("loan", "a")], 1001.0)
    assert [m.outcome for m in first] == ["matched", "duplicate"]
    later = store.match(
        [Lookup("loan", "a"), Lookup("loan", "zzz"), Lookup("churn", "a"), Lookup("loan", "a", 5)],
        1002.0,
    )
    assert [m.outcome for m in later] == ["duplicate", "unknown", "unknown", "unknown"]


def test_put_keeps_the_first_record(make_store: StoreFactory) -> None:
    store = make_store()
    store.put([pred("a", value=1)])
    store.put([req("a", [2, 3])])
    assert store.count() == 1
    (m,) = store.match([Lookup("loan", "a")], 1001.0)
    assert m.prediction is not None
    assert m.prediction.value == 1


def test_business_key_matches_the_latest_prediction(make_store: StoreFactory) -> None:
    store = make_store()
    store.put(
        [
            pred("r1", value=0.1, at=1000.0, key="app-7"),
            pred("r2", value=0.9, at=1005.0, key="app-7"),
        ]
    )
    (m,) = store.match([Lookup("loan", key="app-7")], 1010.0)
    assert m.outcome == "matched"
    assert m.prediction is not None
    assert m.prediction.request_id == "r2"
    assert [
        x.outcome
        for x in store.match([Lookup("loan", key="app-7"), Lookup("loan", key="nope")], 1011.0)
    ] == [
        "duplicate",
        "unknown",
    ]


def test_ttl_expires_before_and_after_purge(make_store: StoreFactory) -> None:
    store = make_store(ttl_seconds=100.0)
    store.put([pred("old", at=1000.0), pred("older", at=900.0), pred("new", at=1150.0)])
    # Past the TTL at match time even before any purge.
    assert store.match([Lookup("loan", "old")], 1101.0)[0].outcome == "expired"
    purged = store.purge(1101.0)
    assert purged.expired == 2  # "old" and "older" (answering "expired" changes nothing)…
    assert store.purge(1101.0).expired == 0  # …and a purge counts each record once
    got = store.match([Lookup("loan", "older"), Lookup("loan", "new")], 1101.0)
    assert [m.outcome for m in got] == ["expired", "matched"]
    assert store.count() == 3  # tombstones are kept to answer "expired"


def test_labelled_records_stay_duplicates_after_their_ttl(make_store: StoreFactory) -> None:
    store = make_store(ttl_seconds=100.0)
    store.put([pred("a", at=1000.0)])
    assert store.match([Lookup("loan", "a")], 1001.0)[0].outcome == "matched"
    assert store.purge(2000.0).expired == 0
    assert store.match([Lookup("loan", "a")], 2000.0)[0].outcome == "duplicate"


def test_rows_of_one_request_are_labelled_one_by_one(make_store: StoreFactory) -> None:
    store = make_store()
    store.put([req("batch", [0.1, 0.2, 0.3], keys=["k0", None, "k2"])])
    assert store.count() == 3
    got = store.match(
        [Lookup("loan", "batch", 2), Lookup("loan", key="k0"), Lookup("loan", "batch", 2),
         Lookup("loan", "batch", 1), Lookup("loan", "batch", 3), Lookup("loan", key="k2")],
        1001.0,
    )  # fmt: skip
    assert [m.outcome for m in got] == [
        "matched", "matched", "duplicate", "matched", "unknown", "duplicate",
    ]  # fmt: skip
    assert [m.prediction.value for m in got if m.prediction] == [0.3, 0.1, 0.2]
    assert got[1].prediction is not None
    assert (got[1].prediction.request_id, got[1].prediction.row) == ("batch", 0)


def test_ttl_counts_unlabelled_rows_and_the_cap_evicts_whole_requests(
    make_store: StoreFactory,
) -> None:
    store = make_store(max_rows=4, ttl_seconds=100.0)
    store.put([req("old", [1, 2, 3], at=1000.0)])
    store.match([Lookup("loan", "old", 1)], 1001.0)
    store.put([req("new", [4, 5], at=1200.0)])
    result = store.purge(1200.0)
    assert result.expired == 2  # rows 0 and 2 of "old" expired unlabelled
    assert result.evicted == 3  # "old" goes whole: 5 rows held, the cap is 4
    assert store.count() == 2
    got = store.match([Lookup("loan", "old", 1), Lookup("loan", "new", 1)], 1201.0)
    assert [m.outcome for m in got] == ["unknown", "matched"]


def test_row_cap_evicts_the_oldest(make_store: StoreFactory) -> None:
    store = make_store(max_rows=3)
    store.put([pred(f"r{i}", at=1000.0 + i) for i in range(5)])
    result = store.purge(1010.0)
    assert result.evicted == 2
    assert store.count() == 3
    got = store.match([Lookup("loan", f"r{i}") for i in range(5)], 1010.0)
    assert [m.outcome for m in got] == ["unknown", "unknown", "matched", "matched", "matched"]


def assert_survives_reopening(open_again: Callable[[], PredictionStore]) -> None:
    """A prediction written, the store closed and opened again: the label still matches."""
    store = open_again()
    store.put([pred("a", value=0.7)])
    store.close()
    again = open_again()
    try:
        (m,) = again.match([Lookup("loan", "a")], 1001.0)
        assert m.outcome == "matched"
        assert m.prediction is not None
        assert m.prediction.value == 0.7
    finally:
        again.close()


def test_file_store_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'fb.db'}"
    assert_survives_reopening(lambda: open_store(url, 100, 3600.0))


def test_bad_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"feedback\.store must be"):
        open_store("redis://x", 10, 1.0)
    with pytest.raises(ConfigError, match="does not exist"):
        open_store(f"sqlite:{tmp_path / 'no' / 'such' / 'dir.db'}", 10, 1.0)
