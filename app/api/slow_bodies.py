"""A deadline for receiving a request's body, without a timer per request.

A client that sends its headers and then stalls (or trickles its body) would hold a
connection and a request task forever: the ASGI server has no body timeout. One sweeper task
looks at the reads in progress a few times per deadline and cancels those past it; the read
turns the cancellation into `RequestTimeout` (408). Registering a read costs a dict insert,
where an `asyncio.timeout` per request cost 10-20 µs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.errors import RequestTimeout


class SlowBodies:
    """Tracks body reads in progress; `read` runs one under the deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = 0
        """Reads cancelled for passing the deadline."""
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sweeper (from the app's lifespan)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def read(self, receive_all: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run `receive_all` (its only suspension points must be the ASGI receives).

        Raises:
            RequestTimeout: the body did not arrive within the deadline.
        """
        task = asyncio.current_task()
        if task is None or self._sweeper is None:
            return await receive_all()
        self._reading[task] = time.monotonic()
        try:
            return await receive_all()
        except asyncio.CancelledError:
            if task not in self._cancelled:
                raise
            self._cancelled.discard(task)
            task.uncancel()
            raise RequestTimeout(
                f"the request body did not arrive within {self.seconds:g} s"
            ) from None
        finally:
            del self._reading[task]

    async def _sweep(self) -> None:
        period = min(max(self.seconds / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.seconds
            for task, started in list(self._reading.items()):
                # A task found here is suspended in a receive: the cancellation lands there.
                if started < cutoff and task not in self._cancelled:
                    self._cancelled.add(task)
                    self.expired += 1
                    task.cancel()
