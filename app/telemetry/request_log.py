"""One JSON line per request, rendered and written by a background thread from a bounded queue.

The request path only appends a small record (references, no rendering) to a deque; when the
queue is full the record is dropped and counted, so a slow sink never delays a response.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.config import LoggingSettings
from app.errors import ConfigError
from app.monitoring.batch import Batch
from app.telemetry.logging import REQUEST_COMPLETED, LineSink, open_request_sink, request_logger

REDACTED = "[redacted]"
FLUSH_INTERVAL = 0.05
"""Seconds between writer passes: request lines reach the sink at most this late."""


def summarize_predictions(values: list[Any] | None) -> dict[str, Any] | None:
    """A compact summary of one response's predictions: numeric stats or class counts."""
    if not values:
        return None
    numbers = [float(v) for v in values if type(v) in (int, float) and math.isfinite(v)]
    if len(numbers) == len(values) and not all(type(v) is int for v in values):
        return {
            "n": len(numbers),
            "mean": math.fsum(numbers) / len(numbers),
            "min": min(numbers),
            "max": max(numbers),
        }
    counts: dict[str, int] = {}
    for v in values[:10_000]:
        key = str(v)[:64]
        if len(counts) < 20 or key in counts:
            counts[key] = counts.get(key, 0) + 1
    return {"n": len(values), "classes": counts}


def payload_rows(batch: Batch, max_rows: int, redact: frozenset[str]) -> list[dict[str, Any]]:
    """The first rows of a batch as objects, with redacted fields masked."""
    n = min(batch.n_rows, max_rows)
    return [
        {k: (REDACTED if k in redact else col[i]) for k, col in batch.columns.items()}
        for i in range(n)
    ]


class RequestLog:
    """The bounded queue and its writer thread."""

    def __init__(
        self,
        settings: LoggingSettings,
        on_drop: Callable[[int], None],
        rng: random.Random | None = None,
        sink: LineSink | None = None,
    ) -> None:
        self.settings = settings
        self.enabled = settings.requests
        self.capacity = settings.queue_size
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._on_drop = on_drop
        self._wake = threading.Event()
        self._high_water = max(1, self.capacity // 4)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = rng or random.Random()
        self._redact = frozenset(settings.redact_fields)
        if sink is None and self.enabled:
            try:
                sink = open_request_sink(settings.sink)
            except OSError as exc:
                raise ConfigError(
                    f"logging.sink {settings.sink!r} cannot be opened: {exc}"
                ) from None
        self._sink = sink
        # Held by the writer for a whole pass (pop, write, flush): `flush` sees an empty queue
        # only between passes, when every popped record has been written or counted.
        self._pass = threading.Condition()
        self._closed = False
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None and self.enabled:
            self._thread = threading.Thread(
                target=self._run, name="infersight-request-log", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Drain the queue and stop the writer. Records submitted from now on, and records
        still queued after `timeout` (a stuck sink), are dropped and counted."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        # A writer stuck in the sink may still pop: each record is popped exactly once, so
        # it is either written by the writer or counted here, never both.
        left = 0
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        if left:
            self._drop(left)

    def wants_payload(self) -> bool:
        """Whether this request's values should be logged (payload logging on and sampled)."""
        s = self.settings
        return s.payload and (
            s.payload_sample_rate >= 1.0 or self._rng.random() < s.payload_sample_rate
        )

    def submit(self, record: dict[str, Any]) -> None:
        """Queue one request's record (never blocks). Values are rendered later, off the loop."""
        if not self.enabled:
            return
        if self._closed or len(self._queue) >= self.capacity:
            self._drop(1)
            return
        self._queue.append(record)
        # Wake the writer early only when the queue fills up; otherwise it wakes on its own
        # every `FLUSH_INTERVAL`: one GIL hand-over per batch instead of one per request.
        if len(self._queue) >= self._high_water and not self._wake.is_set():
            self._wake.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._on_drop(n)

    def _run(self) -> None:
        sink = self._sink
        assert sink is not None
        logger = request_logger(sink)
        queue = self._queue
        log = logging.getLogger(__name__)
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            with self._pass:
                while queue:
                    record = queue.popleft()
                    try:
                        logger.info(REQUEST_COMPLETED, **self._render(record))
                        self.written += 1
                    except Exception:  # a broken sink must not kill the writer
                        self._drop(1)
                try:
                    sink.flush()
                except Exception:  # counted per line on the next write; never kill the writer
                    log.warning("request log sink cannot be flushed")
                self._pass.notify_all()
            if self._stop.is_set() and not queue:
                try:
                    sink.close()
                except Exception:
                    log.warning("request log sink cannot be closed")
                return

    def _render(self, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        ts = out.pop("time", None)
        if ts is not None:
            out["timestamp"] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
        values = out.pop("prediction_values", None)
        batch = out.pop("batch", None)
        out["predictions"] = summarize_predictions(values)
        if out.pop("payload", False):
            if values is not None:
                out["prediction_values"] = values[: self.settings.payload_max_rows]
            if batch is not None:
                out["inputs"] = payload_rows(batch, self.settings.payload_max_rows, self._redact)
        return out

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (tests and shutdown); True when the queue
        emptied in time."""
        if self._thread is None:
            return not self._queue
        deadline = time.monotonic() + timeout
        if not self._pass.acquire(timeout=timeout):  # the writer is stuck in the sink
            return False
        try:
            self._wake.set()
            left = max(0.0, deadline - time.monotonic())
            return self._pass.wait_for(lambda: not self._queue, left)
        finally:
            self._pass.release()
