"""A client that stalls or trickles its body gets 408 after `validation.body_timeout_seconds`
(nothing forwarded, the connection closed), and the sidecar keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from app.api.slow_bodies import SlowBodies
from app.config import Settings, UpstreamSettings, ValidationSettings
from app.errors import RequestTimeout
from app.monitoring.profile import Profile
from tests.support.errors import protocol_error
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row, v2_request

DEADLINE = 0.4
GOOD = json.dumps(v2_request([good_row()])).encode()


def settings(url: str) -> Settings:
    return Settings(
        upstream=UpstreamSettings(url=url),
        validation=ValidationSettings(body_timeout_seconds=DEADLINE),
    )


async def stalled_request(port: int, trickle: bool) -> tuple[bytes, float, bool]:
    """Headers announcing 200 bytes, then 10 bytes and silence (or one byte every 50 ms)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    writer.write(
        b"POST /v2/models/loan/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 200\r\n\r\n" + b'{"inputs":'
    )
    await writer.drain()

    async def drip() -> None:
        for _ in range(100):
            await asyncio.sleep(0.05)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        answer = await asyncio.wait_for(reader.read(65536), 5)
        elapsed = time.perf_counter() - t0
        closed = await asyncio.wait_for(reader.read(1), 5) == b""
    finally:
        if dripping is not None:
            dripping.cancel()
        writer.close()
    return answer, elapsed, closed


async def test_stalled_and_trickling_bodies_get_408_and_are_not_forwarded(
    profile: Profile,
) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        port = int(sc.url.rsplit(":", 1)[1])
        async with aiohttp.ClientSession() as http:
            for trickle in (False, True):
                answer, elapsed, closed = await stalled_request(port, trickle)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), answer
                assert protocol_error(body)["type"] == "request_timeout"
                assert DEADLINE <= elapsed < DEADLINE + 1.0, elapsed
                assert closed  # the rest of that body must not be read as a new request
                async with http.post(
                    f"{sc.url}/v2/models/loan/infer",
                    data=GOOD,
                    headers={"content-type": "application/json"},
                ) as r:
                    assert r.status == 200
        lines = sc.log_lines()
    assert len(up.state.requests) == 2  # only the good requests were forwarded
    assert [x["status"] for x in lines] == [408, 200, 408, 200]
    assert [x["error"] for x in lines if x["status"] == 408] == ["request_timeout"] * 2


async def test_reads_within_the_deadline_are_untouched_and_others_are_not_cancelled() -> None:
    slow = SlowBodies(0.2)
    slow.start()
    try:

        async def quick() -> bytes:
            await asyncio.sleep(0.01)
            return b"body"

        async def stuck() -> bytes:
            await asyncio.sleep(10)
            return b""

        async def bystander() -> str:
            await asyncio.sleep(0.6)  # a task that is not reading a body is never cancelled
            return "done"

        other = asyncio.create_task(bystander())
        assert await slow.read(quick) == b"body"
        t0 = time.perf_counter()
        with pytest.raises(RequestTimeout, match=r"within 0\.2 s"):
            await slow.read(stuck)
        assert 0.2 <= time.perf_counter() - t0 < 0.5
        assert slow.expired == 1
        assert await other == "done"
        # the task that timed out is not left cancelled: it can go on awaiting
        await asyncio.sleep(0.01)
    finally:
        await slow.stop()
