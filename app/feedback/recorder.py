"""Moves predictions from the request path into the store, and labels to their predictions.

The request path only appends one tuple per response to a bounded deque (overflow is counted
and dropped). Every store call — batched writes, matches, purges — runs on one dedicated thread,
in order, so a label never overtakes the write of its own prediction: `match` flushes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.feedback.store import Lookup, Match, PredictionStore, PurgeResult, StoredRequest

FLUSH_INTERVAL_SECONDS = 0.05
PURGE_INTERVAL_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
"""At stop, how long the flush loop may take to finish the write in progress."""

Pending = tuple[str, str, float, list[Any], list[Any] | None, str | None]
"""(model, request id, unix time, one prediction per row, one key per row or None, version)."""


class FeedbackRecorder:
    """The store's only caller: batches prediction writes, serves matches, purges."""

    def __init__(
        self,
        open_store: Callable[[], PredictionStore],
        queue_size: int = 10_000,
        on_drop: Callable[[int], None] = lambda _n: None,
        on_purge: Callable[[PurgeResult], None] = lambda _r: None,
        on_error: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self._open_store = open_store
        self._pending: deque[Pending] = deque()
        self.queue_size = queue_size
        self.on_drop = on_drop
        self.on_purge = on_purge
        self.on_error = on_error
        self.store: PredictionStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0

    def submit(
        self,
        model: str,
        request_id: str,
        values: list[Any],
        keys: list[Any] | None = None,
        version: str | None = None,
    ) -> None:
        """Queue one response's predictions (hot path: O(1), never blocks, never raises)."""
        if self._closed or len(self._pending) >= self.queue_size:
            self.dropped += len(values)
            self.on_drop(len(values))
            return
        self._pending.append((model, request_id, time.time(), values, keys, version))

    async def start(self) -> None:
        """Open the store on the store thread and start the flush loop.

        Raises:
            ConfigError: the store cannot be opened.
        """
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infersight-store")
        loop = asyncio.get_running_loop()
        self.store = await loop.run_in_executor(self._executor, self._open_store)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(self._stopping))

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self, stopping: asyncio.Event) -> None:
        next_purge = time.monotonic() + 1.0
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), FLUSH_INTERVAL_SECONDS)
            if stopping.is_set():
                return
            try:
                await self.flush()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
                    await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store outage must not end the loop
                self.on_error(repr(exc)[:300])

    async def flush(self) -> None:
        """Write everything queued so far."""
        if not self._pending or self.store is None:
            return
        batch: list[Pending] = []
        while self._pending:
            batch.append(self._pending.popleft())
        requests = _expand(batch)
        n_rows = sum(len(r.values) for r in requests)
        try:
            await self._call(self.store.put, requests)
        except Exception:
            self.dropped += n_rows
            self.on_drop(n_rows)
            raise
        self.written += n_rows

    async def purge(self) -> PurgeResult:
        """Expire and evict now (also runs every PURGE_INTERVAL_SECONDS)."""
        assert self.store is not None
        result: PurgeResult = await self._call(self.store.purge, time.time())
        self.on_purge(result)
        return result

    async def match(self, lookups: Sequence[Lookup]) -> list[Match]:
        """Match labels to predictions, after writing every prediction queued before."""
        assert self.store is not None
        await self.flush()
        result: list[Match] = await self._call(self.store.match, lookups, time.time())
        return result

    async def stop(self) -> None:
        """Write what is queued, then close the store; predictions submitted from now on are
        dropped and counted.

        The flush loop is asked to end and awaited, not cancelled in the middle of a write
        (a write on the store thread would go on, uncounted); it is cancelled only after
        STOP_TIMEOUT_SECONDS (a store that hangs).
        """
        self._closed = True
        if self._task is not None:
            assert self._stopping is not None
            self._stopping.set()
            with contextlib.suppress(TimeoutError):  # wait_for has cancelled the loop
                await asyncio.wait_for(self._task, STOP_TIMEOUT_SECONDS)
            self._task = None
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.flush()
            await self._call(self.store.close)
            self.store = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _expand(batch: list[Pending]) -> list[StoredRequest]:
    return [
        StoredRequest(
            model=model,
            request_id=request_id,
            values=values,
            at=at,
            keys=None if keys is None else [None if k is None else str(k) for k in keys],
            version=version,
        )
        for model, request_id, at, values, keys, version in batch
    ]
