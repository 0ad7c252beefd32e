"""A closed-loop HTTP load generator: N connections, each sending one request after another,
for a bounded time, every request with its own `x-request-id`.

In the test's event loop (`run_load`) or as a process of its own, off the test's CPU time:

    python -m tests.support.load URL --connections 64 --seconds 60 --out RESULT.json [--ids]

The bodies are benchmarks/soak.py's `request_bodies` (1 to 32 rows, some with values the
profile has not seen), sent in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass
class LoadResult:
    """What the client saw. `answered` and `failed` are kept only with `record_ids`."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    answered: dict[str, int] = field(default_factory=dict)
    """Request id → HTTP status, for every request that got a whole answer."""
    failed: dict[str, str] = field(default_factory=dict)
    """Request id → error class, for every request sent without a whole answer."""
    seconds: float = 0.0

    @property
    def n_answered(self) -> int:
        return sum(self.statuses.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": dict(self.errors),
            "answered": self.answered,
            "failed": self.failed,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LoadResult:
        return cls(
            sent=doc["sent"],
            statuses=Counter({int(k): v for k, v in doc["statuses"].items()}),
            errors=Counter(doc["errors"]),
            answered=doc["answered"],
            failed=doc["failed"],
            seconds=doc["seconds"],
        )


def default_bodies(n: int = 400) -> list[bytes]:
    from benchmarks.soak import request_bodies

    return request_bodies(n)


async def run_load(
    url: str,
    bodies: list[bytes],
    connections: int,
    seconds: float,
    id_prefix: str = "load",
    record_ids: bool = True,
    stop: asyncio.Event | None = None,
    on_answer: Callable[[LoadResult], None] | None = None,
    rate: float | None = None,
) -> LoadResult:
    """Send requests over `connections` connections until `seconds` have passed or `stop` is
    set; requests in flight then are finished (or time out), never cut. With `rate`, the
    connections together send at most that many requests per second (each paced evenly)."""
    result = LoadResult()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)

    gap = connections / rate if rate else 0.0

    async def worker(session: aiohttp.ClientSession, w: int) -> None:
        i = 0
        due = started + gap * w / connections
        while not stop.is_set() and loop.time() < deadline:
            if gap:
                due += gap
                await asyncio.sleep(max(0.0, due - gap - loop.time()))
            rid = f"{id_prefix}-{w}-{i}"
            body = bodies[(w * 7919 + i) % len(bodies)]
            i += 1
            result.sent += 1
            try:
                async with session.post(
                    url, data=body, headers={**headers, "x-request-id": rid}
                ) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                result.errors[type(exc).__name__] += 1
                if record_ids:
                    result.failed[rid] = type(exc).__name__
                # A dead server answers at once: don't spin, don't outlive the stop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
                continue
            result.statuses[status] += 1
            if record_ids:
                result.answered[rid] = status
            if on_answer is not None:
                on_answer(result)

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, w) for w in range(connections)))
    result.seconds = loop.time() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--ids", action="store_true", help="keep every request id's outcome")
    parser.add_argument("--id-prefix", default="load")
    parser.add_argument(
        "--rate", type=float, help="requests per second in all (default: as fast as answered)"
    )
    args = parser.parse_args(argv)
    bodies = default_bodies()
    t = time.monotonic()
    result = asyncio.run(
        run_load(
            args.url,
            bodies,
            args.connections,
            args.seconds,
            args.id_prefix,
            args.ids,
            rate=args.rate,
        )
    )
    Path(args.out).write_text(json.dumps(result.as_json()))
    print(
        f"{result.sent} sent, {result.n_answered} answered {dict(result.statuses)}, "
        f"errors {dict(result.errors)} in {time.monotonic() - t:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
