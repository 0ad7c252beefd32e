"""Asyncio traffic generator: Open Inference Protocol (V2) JSON requests at a bounded rate and
concurrency, for a bounded time.

Requests look like an MLServer client's: one tensor per feature and request-level
`"parameters": {"content_type": "pd"}`, with batches of 1 to 32 rows. Only HTTP is assumed of
the server that receives them (the sidecar, or the model server itself).

For ground-truth feedback, `run_traffic` can hand every answered request to `on_answer`: the
request id the server answered with (`x-request-id`), the true label of each row (`default` in
the synthetic data) and the model version named in the answer.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from app.demo.data import BOOLEAN, FEATURES, NUMERIC, TARGET, generate, rows
from app.demo.model import MODEL_NAME
from app.demo.scenarios import INVALID_REQUEST_SHARE, Row, Transform, make_invalid

POOL_ROWS = 20_000
DRAIN_SECONDS = 5.0
"""At the end, in-flight requests get at most this long before they are cancelled."""
REQUEST_ID_HEADER = "x-request-id"

OnAnswer = Callable[[str, list[int], str | None], None]
"""Called for every request answered 200: (request id, true label per row, model version)."""


@dataclass
class TrafficStats:
    """What the client saw: answers by status code, failures by exception, latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    """Seconds, for every answered request."""
    rows: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def record(self, status: int, seconds: float, n_rows: int) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)
        self.rows += n_rows

    def status_classes(self) -> dict[str, int]:
        """Counts by class ("2xx", "4xx", "5xx", and "error" for requests never answered)."""
        out: Counter[str] = Counter()
        for status, count in self.statuses.items():
            out[f"{status // 100}xx"] += count
        if self.errors:
            out["error"] = sum(self.errors.values())
        return dict(sorted(out.items()))

    def quantile(self, q: float) -> float | None:
        """Latency quantile in seconds (nearest rank), or None without answers."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class TrafficConfig:
    """Where to send and how hard."""

    url: str
    """Base URL (scheme, host, port) of the server that receives the traffic."""
    model: str = MODEL_NAME
    rate: float = 15.0
    """Requests per second (an upper bound: concurrency may hold it back)."""
    concurrency: int = 16
    max_batch: int = 32
    invalid_share: float = INVALID_REQUEST_SHARE
    timeout_seconds: float = 10.0

    @property
    def infer_url(self) -> str:
        return f"{self.url.rstrip('/')}/v2/models/{self.model}/infer"


class RowSource:
    """A pool of synthetic rows (a different seed than training) to draw requests from, with
    each row's true label."""

    def __init__(self, seed: int = 1, size: int = POOL_ROWS) -> None:
        columns = generate(size, seed=seed)
        self.pool: list[Row] = rows(columns, FEATURES)
        self.labels: list[int] = [int(y) for y in columns[TARGET]]

    def draw(self, k: int, rng: random.Random) -> tuple[list[Row], list[int]]:
        """`k` rows and their labels (the same draws as `sample`)."""
        picks = [rng.randrange(len(self.pool)) for _ in range(k)]
        return [self.pool[i] for i in picks], [self.labels[i] for i in picks]

    def sample(self, k: int, rng: random.Random) -> list[Row]:
        return self.draw(k, rng)[0]


def batch_size(rng: random.Random, max_batch: int = 32) -> int:
    """Mostly small batches: 40% single rows, 30% of 2-8 rows, 30% up to `max_batch`."""
    pick = rng.random()
    if pick < 0.4 or max_batch == 1:
        return 1
    if pick < 0.7 or max_batch <= 8:
        return rng.randint(2, min(8, max_batch))
    return rng.randint(9, max_batch)


def datatype_of(name: str, values: list[Any]) -> str:
    """The V2 datatype a client would declare for a column of these values."""
    present = [v for v in values if v is not None]
    if not present:
        return "FP64" if name in NUMERIC else "BOOL" if name in BOOLEAN else "BYTES"
    if all(type(v) is bool for v in present):
        return "BOOL"
    if all(type(v) is int for v in present):
        return "INT64"
    if all(type(v) in (int, float) for v in present):
        return "FP64"
    return "BYTES"


def encode_request(batch: list[Row], request_id: str) -> dict[str, Any]:
    """A V2 inference request with one tensor per feature, as an MLServer pandas client sends."""
    names = list(batch[0]) if batch else list(FEATURES)
    inputs = []
    for name in names:
        values = [row.get(name) for row in batch]
        inputs.append(
            {
                "name": name,
                "datatype": datatype_of(name, values),
                "shape": [len(values)],
                "data": values,
            }
        )
    return {"id": request_id, "parameters": {"content_type": "pd"}, "inputs": inputs}


def model_version_of(body: bytes) -> str | None:
    """The `model_version` a V2 answer names (None when absent or not JSON)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    version = doc.get("model_version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and version else None


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    batch: list[Row],
    stats: TrafficStats,
    labels: list[int] | None = None,
    on_answer: OnAnswer | None = None,
) -> None:
    request_id = uuid.uuid4().hex
    body = orjson.dumps(encode_request(batch, request_id))
    headers = {"content-type": "application/json", REQUEST_ID_HEADER: request_id}
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
            status = resp.status
            answered_id = resp.headers.get(REQUEST_ID_HEADER) or request_id
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.errors[type(exc).__name__] += 1
        return
    stats.record(status, time.perf_counter() - started, len(batch))
    if on_answer is not None and labels is not None and status == 200:
        on_answer(answered_id, labels, model_version_of(answer))


async def run_traffic(
    config: TrafficConfig,
    duration_seconds: float,
    transform: Transform,
    source: RowSource,
    *,
    seed: int = 0,
    stats: TrafficStats | None = None,
    on_answer: OnAnswer | None = None,
) -> TrafficStats:
    """Send requests for `duration_seconds`, then give in-flight ones up to `DRAIN_SECONDS`.

    Each request is a batch drawn from `source`, passed through `transform`, and for a share
    `config.invalid_share` of requests made invalid. Requests answered 200 go to `on_answer`
    with the true labels of their rows. Cancelling the task stops it at once.
    """
    stats = stats if stats is not None else TrafficStats()
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, duration_seconds)
    next_at = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            while (now := loop.time()) < deadline:
                if next_at > now:
                    await asyncio.sleep(min(next_at, deadline) - now)
                    continue
                if len(tasks) >= config.concurrency:
                    await asyncio.wait(
                        tasks, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                drawn, labels = source.draw(batch_size(rng, config.max_batch), rng)
                batch = transform(drawn, rng)
                if rng.random() < config.invalid_share:
                    batch = make_invalid(batch, rng)
                task = asyncio.create_task(
                    _send(session, config.infer_url, batch, stats, labels, on_answer)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at = max(next_at + 1.0 / config.rate, now - 1.0 / config.rate)
            if tasks:
                drain = min(DRAIN_SECONDS, config.timeout_seconds)
                _, pending = await asyncio.wait(tasks, timeout=drain)
                if pending:
                    stats.errors["cancelled"] += len(pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return stats
