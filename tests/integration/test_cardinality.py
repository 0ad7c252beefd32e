"""Cardinality: 100,000 requests with random category strings, random extra feature names,
random model names and versions in the URL, random paths and status classes leave the number
of series in `/metrics` unchanged, and no random string ever becomes a label value.

Requests go straight into the sidecar's ASGI app (no HTTP client in the way, so 100,000 fit in
well under a minute); the app forwards them over real HTTP to a raw-socket model server on
loopback.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from app.config import DriftSettings, LoggingSettings, Settings, UpstreamSettings
from app.main import create_app
from app.monitoring.profile import Profile
from tests.support.fault_upstream import FaultUpstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOTAL = 100_000
WARM_UP = 2_000
CONCURRENCY = 32
MARK = "rnd"
"""Every random string starts with this: none may appear in /metrics."""
TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}


def random_word(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzé_-.0123456789"
    return MARK + "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 24)))


def random_request(rng: random.Random) -> tuple[str, str, bytes]:
    """(method, path, body): mostly inference for the profiled model with unseen categories
    and unknown features, plus unknown models, versions, other paths and broken bodies."""
    roll = rng.random()
    if roll < 0.15:
        return "POST", f"/v2/models/{random_word(rng)}/infer", b'{"inputs": []}'
    if roll < 0.2:
        return "GET", f"/v2/models/{random_word(rng)}/{random_word(rng)}", b""
    if roll < 0.25:
        return "POST", "/v2/models/loan/infer", b'{"inputs": [' + random_word(rng).encode()
    path = "/v2/models/loan/infer"
    if roll < 0.35:
        path = f"/v2/models/loan/versions/{random_word(rng)}/infer"
    n = rng.randint(1, 4)
    columns: dict[str, list[Any]] = {
        "age": [rng.randint(-10, 200) for _ in range(n)],
        "monthly_income": [rng.uniform(-1e6, 1e7) for _ in range(n)],
        "marital_status": [random_word(rng) for _ in range(n)],
        "employment": [rng.choice(["employed", random_word(rng)]) for _ in range(n)],
        "loan_amount": [rng.uniform(0, 1e6) for _ in range(n)],
        "has_mortgage": [rng.random() < 0.5 for _ in range(n)],
        "purpose": [random_word(rng) for _ in range(n)],
    }
    for _ in range(rng.randint(0, 3)):
        columns[random_word(rng)] = [random_word(rng) for _ in range(n)]
    inputs = [
        {"name": k, "shape": [n], "datatype": TYPES.get(k, "BYTES"), "data": v}
        for k, v in columns.items()
    ]
    rng.shuffle(inputs)
    return "POST", path, json.dumps({"inputs": inputs}).encode()


async def call(app: Any, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8090), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def series(text: str) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"]


async def test_random_names_and_values_never_add_series(profile: Profile) -> None:
    rng = random.Random(20261130)
    requests = [random_request(rng) for _ in range(TOTAL)]
    async with FaultUpstream() as upstream:
        upstream.seen.clear()
        settings = Settings(
            upstream=UpstreamSettings(url=upstream.url, timeout_seconds=5),
            drift=DriftSettings(interval_seconds=3600, window_rows=2000, min_rows=100),
            logging=LoggingSettings(requests=False),
        )
        app = create_app(settings, profiles={"loan": profile}, configure_logs=False)
        state = app.state.infersight
        async with app.router.lifespan_context(app):
            statuses: dict[int, int] = {}
            queue = iter(requests)

            async def worker(stop_at: int) -> None:
                for method, path, body in queue:
                    status, _ = await call(app, method, path, body)
                    statuses[status] = statuses.get(status, 0) + 1
                    if sum(statuses.values()) >= stop_at:
                        return

            async def scrape() -> str:
                assert await state.drift.run_cycle()
                status, body = await call(app, "GET", "/metrics", b"")
                assert status == 200
                return body.decode()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(WARM_UP) for _ in range(CONCURRENCY)))
            before = await scrape()
            await asyncio.gather(*(worker(TOTAL) for _ in range(CONCURRENCY)))
            after = await scrape()
            elapsed = time.perf_counter() - t0
    served = sum(statuses.values())
    print(f"{served} requests in {elapsed:.1f} s; statuses {sorted(statuses.items())}; "
          f"{len(series(after))} series")  # fmt: skip
    assert served == TOTAL
    assert upstream.seen["ok"] >= statuses[200]  # every 200 came from the model server
    assert {200, 400} <= set(statuses)  # answered and rejected
    assert not set(statuses) & {500, 502, 504}
    assert set(series(after)) == set(series(before))
    assert MARK not in after
    # the requests did reach the monitoring: rows counted, unseen categories folded
    assert 'infersight_rows_total{model="loan"}' in after
    assert 'model="__other__"' in after
