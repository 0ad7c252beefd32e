"""No data loss, with real processes on loopback: `infersight serve` in front of a real HTTP
model server.

- 64 connections for 60 s: every answered request has exactly one request-log line (by request
  id), or every missing line is counted as dropped and `InferSightLogRecordsDropped` (the rule
  from prometheus/rules/, evaluated by promtool over the scraped counter) fires.
- A full log queue in front of a blocked sink (a FIFO nobody reads): the drops are counted
  exactly (written + dropped = requests) and the alert fires.
- SIGTERM with requests in flight: they all finish with 200, new connections are refused, the
  process exits 0 within the graceful timeout, their log lines and feedback records are there.
- kill -9 under write load, three times: the SQLite feedback store passes `integrity_check`,
  opens with the project's store class, and a restarted sidecar matches labels for exactly the
  predictions that were committed before the kill.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import yaml

from app.cli import GRACEFUL_SHUTDOWN_SECONDS
from app.feedback.sqlite_store import SQLiteStore
from app.feedback.store import Lookup
from tests.support.components import require_binary
from tests.support.load import LoadResult, default_bodies, run_load
from tests.support.loopback import stub_server_process, write_config
from tests.support.sidecar import parse_metrics
from tests.support.sidecar_process import ROOT, SidecarProcess
from tests.support.stub_upstream import StubUpstream

pytestmark = [pytest.mark.integration]

RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
DROP_ALERT = "InferSightLogRecordsDropped"
DROPPED = "infersight_log_records_dropped_total"
INFER = "/v2/models/loan/infer"


# -- helpers ---------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return parse_metrics(r.read().decode())


def requests_total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> int:
    return int(sum(v for (name, _), v in metrics.items() if name == "infersight_requests_total"))


def log_ids(lines: list[str]) -> Counter[str]:
    """Request ids of `request.completed` lines."""
    ids: Counter[str] = Counter()
    for line in lines:
        doc = json.loads(line)
        assert doc["event"] == "request.completed", line
        ids[doc["request_id"]] += 1
    return ids


def stopped_event(sidecar: SidecarProcess) -> dict[str, Any]:
    """The sidecar's `sidecar.stopped` line (its writer's own written/dropped counts)."""
    for line in reversed(sidecar.log_path.read_text().splitlines()):
        if '"sidecar.stopped"' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise AssertionError(f"no sidecar.stopped line:\n{sidecar.tail()}")


@pytest.fixture
def stub_server(tmp_path: Path) -> Iterator[str]:
    with stub_server_process(tmp_path / "stub.log") as url:
        yield url


def _duration_minutes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", text)
    assert match, f"unexpected duration {text!r}"
    n, unit = int(match.group(1)), match.group(2)
    return max(1, {"s": (n + 59) // 60, "m": n, "h": 60 * n}[unit])


def drop_alert_rule() -> dict[str, Any]:
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == DROP_ALERT:
                    return dict(rule)
    raise AssertionError(f"{DROP_ALERT} is not in {RULES}")


def check_drop_alert(work: Path, before: float, after: float) -> str:
    """Evaluate the shipped `InferSightLogRecordsDropped` rule with promtool over two scrapes of
    the drop counter (a minute apart on promtool's clock): its expression and the alert must be
    on exactly when the counter rose. Returns promtool's output."""
    promtool = require_binary("promtool", "prometheus")
    rule = drop_alert_rule()
    pending = _duration_minutes(str(rule.get("for", "0s")))
    at = f"{1 + pending + 1}m"  # the rise is seen from 1m; the alert fires `for` later
    labels = {"instance": "sidecar", "job": "infersight"}
    fires = after > before
    alert_labels = {
        "__name__": "ALERTS",
        "alertname": DROP_ALERT,
        "alertstate": "firing",
        **labels,
        **rule.get("labels", {}),
    }
    series = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    alert_series = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(alert_labels.items())) + "}"
    doc = {
        "rule_files": [str(p) for p in RULES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"{DROPPED}{series}", "values": f"{before:g} {after:g}x30"}
                ],
                "promql_expr_test": [
                    {
                        "expr": f"count({rule['expr']})",
                        "eval_time": at,
                        "exp_samples": [{"labels": "{}", "value": 1}] if fires else [],
                    },
                    {
                        "expr": f'ALERTS{{alertname="{DROP_ALERT}",alertstate="firing"}}',
                        "eval_time": at,
                        "exp_samples": [{"labels": alert_series, "value": 1}] if fires else [],
                    },
                ],
            }
        ],
    }
    path = work / "drop_alert_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"{path.read_text()}\n{out.stdout}\n{out.stderr}"
    assert "SUCCESS" in out.stdout
    return out.stdout


# -- 1. 64 connections for 60 s --------------------------------------------------------------

LOAD_SECONDS = 60
LOAD_CONNECTIONS = 64


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_answered_request_has_exactly_one_log_line(stub_server: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, stub_server, drift={"enabled": True, "interval_seconds": 10})
    sidecar = SidecarProcess(config, tmp_path / "sidecar.log").start()
    try:
        before = scrape(sidecar.url)
        out = tmp_path / "load.json"
        subprocess.run(
            [sys.executable, "-m", "tests.support.load", f"{sidecar.url}{INFER}",
             "--connections", str(LOAD_CONNECTIONS), "--seconds", str(LOAD_SECONDS),
             "--out", str(out), "--ids", "--id-prefix", "soak"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
            timeout=LOAD_SECONDS + 120,
        )  # fmt: skip
        load = LoadResult.from_json(json.loads(out.read_text()))
        after = scrape(sidecar.url)
    finally:
        code = sidecar.stop()
    assert code == 0, sidecar.tail()

    answered = load.answered
    lines = (tmp_path / "requests.log").read_text().splitlines()
    ids = log_ids(lines)
    dropped = after.get((DROPPED, ()), 0.0)
    handled = requests_total(after) - requests_total(before)
    stopped = stopped_event(sidecar)
    print(
        f"\n64 connections for {load.seconds:.1f} s: {load.sent} sent, {len(answered)} answered "
        f"{dict(load.statuses)}, errors {dict(load.errors)}; sidecar handled {handled}; "
        f"{len(lines)} log lines, {dropped:g} dropped (scraped), writer {stopped}"
    )
    assert len(answered) > 1000, "the load never got going"
    assert set(load.statuses) == {200}, load.statuses
    assert len(answered) <= handled <= load.sent
    duplicates = {rid: n for rid, n in ids.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} request ids logged more than once"
    assert set(ids) <= set(answered) | set(load.failed), "log lines for ids never sent"
    missing = set(answered) - set(ids)
    assert stopped["written"] == len(lines)
    if dropped == 0:
        assert not missing, f"{len(missing)} answered requests have no log line"
        assert stopped["dropped"] == 0
    else:
        # Every line that is missing was counted, and the alert fires.
        assert len(lines) + dropped == handled
        assert len(missing) <= dropped
    check_drop_alert(tmp_path, before.get((DROPPED, ()), 0.0), dropped)


# -- 2. drops are counted and alert ----------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_blocked_sink_drops_are_counted_and_fire_the_alert(
    stub_server: str, tmp_path: Path
) -> None:
    fifo = tmp_path / "requests.fifo"
    os.mkfifo(fifo)
    # A reader must exist for the sidecar's open to return; it reads nothing until told.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    config = write_config(tmp_path, stub_server, logging={"sink": str(fifo), "queue_size": 8})
    sidecar = SidecarProcess(config, tmp_path / "sidecar.log")
    received: list[bytes] = []

    def drain() -> None:
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):
            received.append(chunk)

    drainer = threading.Thread(target=drain, daemon=True)
    try:
        await asyncio.to_thread(sidecar.start)
        before = scrape(sidecar.url)
        load = await run_load(f"{sidecar.url}{INFER}", default_bodies(), 16, 3.0, "drop")
        after = scrape(sidecar.url)
    finally:
        drainer.start()  # now the sink is read: what is queued behind it can be written
        code = await asyncio.to_thread(sidecar.stop)
        drainer.join(15)
        os.close(reader)
    assert code == 0, sidecar.tail()
    assert not drainer.is_alive(), "the sidecar never closed its sink"

    lines = b"".join(received).decode().splitlines()
    ids = log_ids(lines)
    dropped = after.get((DROPPED, ()), 0.0)
    handled = requests_total(after) - requests_total(before)
    stopped = stopped_event(sidecar)
    print(
        f"\nblocked sink, queue of 8: {len(load.answered)} answered {dict(load.statuses)}, "
        f"{len(lines)} lines written, {dropped:g} dropped (scraped), writer {stopped}"
    )
    assert set(load.statuses) == {200}
    assert not load.failed
    assert handled == len(load.answered)
    assert dropped > 0, "the blocked sink dropped nothing"
    assert max(ids.values()) == 1
    assert set(ids) <= set(load.answered)
    # Exact accounting: every answered request is either a line or a counted drop, and the
    # records queued behind the blocked sink were written once it was read (the drain).
    assert len(lines) + dropped == handled
    assert stopped == {**stopped, "written": len(lines), "dropped": dropped}
    check_drop_alert(tmp_path, before.get((DROPPED, ()), 0.0), dropped)


# -- 3. SIGTERM drains -----------------------------------------------------------------------

IN_FLIGHT = 16
UPSTREAM_DELAY = 1.5


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_finishes_in_flight_requests_and_drains_the_queues(
    tmp_path: Path,
) -> None:
    async with StubUpstream() as upstream:
        upstream.state.prediction = 1
        config = write_config(tmp_path, upstream.url)
        sidecar = await asyncio.to_thread(SidecarProcess(config, tmp_path / "sidecar.log").start)
        assert sidecar.proc is not None
        upstream.state.delay = UPSTREAM_DELAY
        loop = asyncio.get_running_loop()
        finished: dict[str, float] = {}
        body = default_bodies(IN_FLIGHT)
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=IN_FLIGHT)
            ) as http:

                async def call(i: int) -> tuple[str, int, str]:
                    rid = f"inflight-{i}"
                    async with http.post(
                        f"{sidecar.url}{INFER}", data=body[i],
                        headers={"x-request-id": rid, "content-type": "application/json"},
                    ) as r:  # fmt: skip
                        await r.read()
                        finished[rid] = loop.time()
                        return rid, r.status, r.headers.get("x-request-id", "")

                calls = [asyncio.create_task(call(i)) for i in range(IN_FLIGHT)]
                deadline = loop.time() + 30
                while len(upstream.state.requests) < IN_FLIGHT:  # all of them at the model
                    assert loop.time() < deadline, "the requests never reached the upstream"
                    await asyncio.sleep(0.01)
                signalled = loop.time()
                sidecar.proc.send_signal(signal.SIGTERM)

                # The listener closes at once: connections are refused from then on.
                while not await _refused(sidecar.port):
                    assert loop.time() < signalled + 3, "still accepting 3 s after SIGTERM"
                    await asyncio.sleep(0.01)
                refused_after = loop.time() - signalled
                assert not any(c.done() for c in calls), "in-flight requests ended early"
                async with aiohttp.ClientSession() as fresh:
                    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
                        await fresh.post(f"{sidecar.url}{INFER}", data=body[0])
                assert excinfo.value.os_error.errno == errno.ECONNREFUSED
                assert not any(c.done() for c in calls), "in-flight requests ended early"
                results = await asyncio.gather(*calls)
            code = await asyncio.to_thread(sidecar.proc.wait, GRACEFUL_SHUTDOWN_SECONDS + 10)
            exited_after = loop.time() - signalled
        finally:
            if sidecar.proc.poll() is None:
                sidecar.proc.kill()
                sidecar.proc.wait()
    print(
        f"\nSIGTERM with {IN_FLIGHT} requests in flight: refused after {refused_after:.3f} s, "
        f"last answer after {max(finished.values()) - signalled:.3f} s, exit {code} after "
        f"{exited_after:.3f} s"
    )
    ids = [rid for rid, _, _ in results]
    assert [(status, echoed) for _, status, echoed in results] == [(200, rid) for rid in ids], (
        sidecar.tail()
    )
    assert min(finished.values()) > signalled
    assert code == 0, sidecar.tail()
    assert exited_after < GRACEFUL_SHUTDOWN_SECONDS

    logged = log_ids((tmp_path / "requests.log").read_text().splitlines())
    assert {rid: logged[rid] for rid in ids} == dict.fromkeys(ids, 1)
    assert stopped_event(sidecar)["dropped"] == 0

    store = SQLiteStore(str(tmp_path / "feedback.db"), max_rows=10**6, ttl_seconds=86400)
    try:
        matches = store.match([Lookup("loan", rid) for rid in ids], time.time())
    finally:
        store.close()
    assert [m.outcome for m in matches] == ["matched"] * IN_FLIGHT
    assert all(m.prediction is not None and m.prediction.value == 1 for m in matches)


# -- 4. kill -9 ------------------------------------------------------------------------------

KILL_ROUNDS = 3
BEFORE_ACK = 150
"""Answers before labels are posted for some of them (their match commits them)."""
AFTER_ACK = 150
"""More answers after that, then kill -9 in the middle of the load."""
ACKED = 32


def committed(db: Path, like: str) -> tuple[set[str], set[str], int]:
    """After a crash: the integrity check, then through the project's store class the request
    ids matching `like` that were committed, those labelled, and the rows held."""
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        raw.close()
    store = SQLiteStore(str(db), max_rows=10**6, ttl_seconds=86400)
    try:
        rows = store.count()
        args = (like,)
        stored = {r for (r,) in store.db.execute(
            "SELECT request_id FROM infersight_requests WHERE request_id LIKE ?", args)}  # fmt: skip
        labelled = {r for (r,) in store.db.execute(
            "SELECT request_id FROM infersight_labelled WHERE request_id LIKE ?", args)}  # fmt: skip
    finally:
        store.close()
    return stored, labelled, rows


async def post_feedback(http: aiohttp.ClientSession, url: str, ids: list[str]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for start in range(0, len(ids), 2000):
        items = [{"request_id": rid, "row": 0, "label": 1} for rid in ids[start : start + 2000]]
        async with http.post(f"{url}/feedback", json={"feedback": items}) as r:
            assert r.status == 200, await r.text()
            totals.update((await r.json())["outcomes"])
    return {k: v for k, v in totals.items() if v}


class Round:
    """One sidecar life ended by kill -9."""

    def __init__(self, n: int) -> None:
        self.prefix = f"kill{n}"
        self.load = LoadResult()
        self.acked: set[str] = set()
        self.stored: set[str] = set()
        self.labelled: set[str] = set()


async def kill_mid_load(sidecar: SidecarProcess, rnd: Round) -> None:
    """Load the sidecar, label some answers, load on, then kill -9 it mid-load."""
    assert sidecar.proc is not None
    stop = asyncio.Event()
    first, second = asyncio.Event(), asyncio.Event()
    progress: dict[str, Any] = {"mark": None}

    def on_answer(result: LoadResult) -> None:
        progress["result"] = result
        if result.n_answered >= BEFORE_ACK:
            first.set()
        mark = progress["mark"]
        if mark is not None and result.n_answered >= mark + AFTER_ACK:
            second.set()

    load = asyncio.create_task(
        run_load(f"{sidecar.url}{INFER}", default_bodies(), 16, 60.0, rnd.prefix, True, stop,
                 on_answer)
    )  # fmt: skip
    try:
        await asyncio.wait_for(first.wait(), 30)
        # Labels for some answers: a match writes everything queued before it, so `matched`
        # proves that the prediction and its label were committed.
        ids = list(progress["result"].answered)[:ACKED]
        async with aiohttp.ClientSession() as http:
            outcomes = await post_feedback(http, sidecar.url, ids)
        assert outcomes == {"matched": ACKED}, outcomes
        rnd.acked = set(ids)
        progress["mark"] = progress["result"].n_answered
        await asyncio.wait_for(second.wait(), 30)
        children = psutil.Process(sidecar.proc.pid).children(recursive=True)
        sidecar.proc.kill()  # SIGKILL, mid-load
        await asyncio.to_thread(sidecar.proc.wait, 10)
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 10)
        for child in alive:
            child.kill()
    finally:
        stop.set()
        rnd.load = await load
        if sidecar.proc.poll() is None:
            sidecar.proc.kill()
            sidecar.proc.wait()


@pytest.mark.timeout(240)
async def test_the_feedback_store_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    rounds: list[Round] = []
    async with StubUpstream() as upstream, aiohttp.ClientSession() as http:
        upstream.state.prediction = 1
        config = write_config(tmp_path, upstream.url)
        for n in range(KILL_ROUNDS + 1):
            sidecar = SidecarProcess(config, tmp_path / f"sidecar-{n}.log")
            await asyncio.to_thread(sidecar.start)
            if rounds:
                # The restarted sidecar, on the same file, matches exactly what was committed.
                prev = rounds[-1]
                answered = set(prev.load.answered)
                ask = sorted(prev.stored | answered)
                outcomes = await post_feedback(http, sidecar.url, ask)
                expected = {
                    "matched": len(prev.stored - prev.acked),
                    "duplicate": len(prev.acked),
                    "unknown": len(answered - prev.stored),
                }
                assert outcomes == {k: v for k, v in expected.items() if v}, (n, outcomes)
            if n == KILL_ROUNDS:
                assert await asyncio.to_thread(sidecar.stop) == 0, sidecar.tail()
                break
            rnd = Round(n)
            try:
                await kill_mid_load(sidecar, rnd)
            except BaseException:
                print(sidecar.tail())
                raise
            rnd.stored, rnd.labelled, rows = committed(db, f"{rnd.prefix}-%")
            rounds.append(rnd)
            sent = set(rnd.load.answered) | set(rnd.load.failed)
            print(
                f"\nkill -9 round {n}: {rnd.load.sent} sent, {len(rnd.load.answered)} answered, "
                f"{len(rnd.load.failed)} failed ({dict(rnd.load.errors)}); committed "
                f"{len(rnd.stored)} requests ({len(set(rnd.load.answered) - rnd.stored)} "
                f"answered but not committed), {len(rnd.labelled)} labelled; {rows} rows in "
                f"the store; integrity ok"
            )
            assert set(rnd.load.statuses) == {200}
            assert len(rnd.stored) >= BEFORE_ACK
            assert rnd.stored <= sent, "records for requests never sent"
            assert rnd.acked <= rnd.stored, "predictions matched before the kill were lost"
            assert rnd.labelled == rnd.acked, "labels committed before the kill were lost"
    # Later kills lost nothing that earlier lives had committed.
    stored, labelled, _ = committed(db, "kill%")
    assert stored == set().union(*(r.stored for r in rounds))
    assert labelled == set().union(*(r.stored for r in rounds))  # all labelled by now
