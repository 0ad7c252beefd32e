"""The lean HTTP/1.1 client against scripted servers on loopback: framing, keep-alive, retries,
timeouts and the pool limit, byte by byte."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import UpstreamSettings
from app.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from app.upstream.client import UpstreamClient
from app.upstream.http1 import (
    AnswerTimeout,
    BadAnswer,
    ConnectFailed,
    ConnectionPool,
    Disconnected,
    _Connection,
)
from tests.support.stub_upstream import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Script:
    """A TCP server whose every connection runs `handler(reader, writer, n)` (n counts
    connections from 0)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.handler(reader, writer, n)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """Read one request; returns its head (the body is stored in `bodies`)."""
        head, body = await read_request(reader)
        self.heads.append(head)
        self.bodies.append(body)
        return head


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (sized by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answering_after(delay: float) -> Handler:
    """A keep-alive server that answers every request after `delay` seconds."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(r)
            await asyncio.sleep(delay)
            w.write(ok())
            await w.drain()

    return handler


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[Script, str]]:
    script = Script(handler)
    port = free_port()
    server = await asyncio.start_server(script._serve, "127.0.0.1", port)
    try:
        yield script, f"http://127.0.0.1:{port}"
    finally:
        server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def client(url: str, **kw: object) -> UpstreamClient:
    return UpstreamClient(UpstreamSettings(url=url, timeout_seconds=2.0, **kw))  # type: ignore[arg-type]


async def test_keep_alive_carries_every_request_on_one_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            await script.read_request(r)
            w.write(ok(b"answer %d" % len(script.heads)))
            await w.drain()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        bodies = []
        for i in range(5):
            resp = await c.request("POST", "/v2/x?a=%2F", [("X-Test", str(i))], b"body-%d" % i)
            bodies.append(resp.body)
            assert resp.status == 200
            assert resp.content_type == "application/json"
        await c.close()
    assert bodies == [b"answer %d" % i for i in range(1, 6)]
    assert script.connections == 1
    assert script.bodies == [b"body-%d" % i for i in range(5)]
    first = script.heads[0].decode()
    assert first.startswith("POST /v2/x?a=%2F HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}\r\n" in first
    assert "X-Test: 0\r\n" in first
    assert "Content-Length: 6\r\n" in first


async def test_chunked_answer_is_joined_and_its_framing_not_relayed() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            await script.read_request(r)
            w.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Model: m\r\n\r\n5\r\nhello\r\n"
            )
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(b"6\r\n world\r\n0\r\n\r\n")

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        first = await c.request("GET", "/", [], None)
        second = await c.request("GET", "/", [], None)
        await c.close()
    assert first.body == second.body == b"hello world"
    assert first.raw_headers == [(b"x-model", b"m")]
    assert script.connections == 1


async def test_answer_without_length_ends_with_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await w.drain()
        w.write(b"part two")
        await w.drain()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        a = await c.request("GET", "/", [], None)
        b = await c.request("GET", "/", [], None)
        assert c.pool.open_connections == 0
        await c.close()
    assert a.body == b.body == b"part one, part two"
    assert script.connections == 2


async def test_head_interim_and_no_content_answers() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await script.read_request(r)
            if head.startswith(b"HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            elif head.startswith(b"DELETE"):
                w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await w.drain()
                w.write(ok(b"final"))
            await w.drain()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        head = await c.request("HEAD", "/", [], None)
        gone = await c.request("DELETE", "/", [], None)
        final = await c.request("POST", "/", [], b"x")
        again = await c.request("DELETE", "/", [], None)
        await c.close()
    assert (head.status, head.body) == (200, b"")
    assert (gone.status, gone.body) == (204, b"")
    assert (final.status, final.body) == (200, b"final")
    assert again.status == 204
    assert script.connections == 2  # a HEAD answer's connection is not reused


async def test_garbage_is_a_bad_response_and_the_next_request_recovers() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(b"this is not http\r\n\r\n" if n == 0 else ok())
        await w.drain()
        if n > 0:
            await r.read()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        with pytest.raises(UpstreamBadResponse, match="not valid HTTP"):
            await c.request("GET", "/", [], None)
        assert (await c.request("GET", "/", [], None)).status == 200
        assert c.pool.open_connections == 1
        await c.close()


async def test_timeout_is_bounded_and_the_slow_connection_discarded() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        if n == 0:
            await asyncio.sleep(5)
        w.write(ok())
        await w.drain()
        await r.read()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"within 0\.3 s"):
            await c.request("GET", "/", [], None, timeout_seconds=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.0
        assert c.pool.open_connections == 0
        assert (await c.request("GET", "/", [], None)).status == 200
        await c.close()


async def test_idle_connection_closed_by_the_server_is_retried_once() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(ok())
        await w.drain()
        # then close: the client's kept-alive connection is dead when it next uses it

    for retry in (True, False):
        async with serve(handler) as (script, url):
            c = client(url, retry_on_disconnect=retry)
            await c.start()
            await c.request("POST", "/", [], b"1")
            await asyncio.sleep(0.05)
            if retry:
                assert (await c.request("POST", "/", [], b"2")).status == 200
                assert c.retries == 1 or script.connections == 2
            else:
                # the close is seen before the request goes out: a new connection, no retry
                assert (await c.request("POST", "/", [], b"2")).status == 200
                assert script.connections == 2
                assert c.retries == 0
            await c.close()


async def test_stale_connection_write_is_retried_not_failed() -> None:
    """A connection the server closed without the client noticing yet: the write goes out,
    the answer never comes, the request is sent once more."""
    calls = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        head = await script.read_request(r)
        if n == 0:
            return  # swallow the request, close without answering
        calls.append(head)
        w.write(ok())
        await w.drain()
        await r.read()

    async with serve(handler) as (script, url):
        pool = ConnectionPool(url, limit=4, connect_timeout=1)
        retried: list[int] = []
        answer = await pool.request(
            "POST", "/", [], b"x", 2.0, retry_before_answer=True, on_retry=lambda: retried.append(1)
        )
        assert answer.status == 200
        assert retried == [1]
        assert len(calls) == 1
        await pool.close()
        script.connections = 0
        pool = ConnectionPool(url, limit=4, connect_timeout=1)
        with pytest.raises(Disconnected) as info:
            await pool.request("POST", "/", [], b"x", 2.0, retry_before_answer=False)
        assert info.value.before_answer
        assert pool.open_connections == 0
        await pool.close()


async def test_closed_mid_answer_is_not_retried() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await w.drain()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        with pytest.raises(UpstreamUnavailable, match="mid-answer"):
            await c.request("POST", "/", [], b"x")
        await c.close()
    assert script.connections == 1
    assert c.retries == 0


async def test_pool_limit_queues_callers_and_answers_them_all() -> None:
    async with serve(answering_after(0.05)) as (script, url):
        c = client(url, pool_size=2)
        await c.start()
        answers = await asyncio.gather(*(c.request("GET", "/", [], None) for _ in range(12)))
        assert [a.status for a in answers] == [200] * 12
        assert script.most_open == 2
        assert script.connections == 2
        assert c.pool.open_connections == 2
        # waiting for a free connection counts against the deadline
        slow = [c.request("GET", "/", [], None, timeout_seconds=1.0) for _ in range(2)]
        with pytest.raises(UpstreamTimeout):
            await asyncio.gather(*slow, c.request("GET", "/", [], None, timeout_seconds=0.01))
        await asyncio.sleep(0.2)
        assert c.pool.open_connections <= 2
        await c.close()


async def test_cancelled_request_gives_its_slot_back() -> None:
    async with serve(answering_after(0.3)) as (_script, url):
        c = client(url, pool_size=1)
        await c.start()
        first = asyncio.create_task(c.request("GET", "/", [], None))
        waiting = asyncio.create_task(c.request("GET", "/", [], None))
        await asyncio.sleep(0.05)
        first.cancel()
        waiting.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)
        assert c.pool.open_connections == 0
        assert (await c.request("GET", "/", [], None)).status == 200
        await c.close()


async def test_refused_and_large_bodies() -> None:
    c = client(f"http://127.0.0.1:{free_port()}")
    await c.start()
    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        await c.request("GET", "/", [], None)
    assert c.pool.open_connections == 0
    await c.close()

    big = bytes(range(256)) * 4096  # 1 MiB, written after the head

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(ok(script.bodies[-1][::-1]))
        await w.drain()
        await r.read()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        resp = await c.request("POST", "/", [], big)
        await c.close()
    assert script.bodies == [big]
    assert resp.body == big[::-1]


async def test_http10_answer_closes_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await script.read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await r.read()

    async with serve(handler) as (script, url):
        c = client(url)
        await c.start()
        for _ in range(3):
            assert (await c.request("GET", "/", [], None)).body == b"ok"
        await c.close()
    assert script.connections == 3


def test_urls_and_host_header() -> None:
    assert ConnectionPool("http://model:80", 1, 1).host_header == "model"
    assert ConnectionPool("https://model", 1, 1).port == 443
    assert ConnectionPool("http://[::1]:8080", 1, 1).host_header == "[::1]:8080"
    with pytest.raises(ValueError, match="not an http"):
        ConnectionPool("ftp://model", 1, 1)


ANSWER = (
    b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    b"X-A: 1\r\n\r\n4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=12))
def test_any_split_of_the_byte_stream_parses_the_same(cuts: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(loop)
        conn.connection_made(_Transport())
        fut = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, loop.time() + 60, head_only=False)
        edges = [0, *sorted(set(cuts)), len(ANSWER)]
        for a, b in itertools.pairwise(edges):
            conn.data_received(ANSWER[a:b])
        answer = fut.result()
    finally:
        loop.close()
    assert answer.status == 201
    assert answer.body == b"Wikipedia in \r\n\r\nchunks."
    assert (b"X-A", b"1") in answer.headers
    assert answer.keep_alive
    assert not conn.closed


@settings(max_examples=100, deadline=None)
@given(junk=st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_the_client_errors(junk: bytes) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(loop)
        conn.connection_made(_Transport())
        fut = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, loop.time() + 60, head_only=False)
        conn.data_received(junk)
        conn.connection_lost(None)
        assert fut.done()
        exc = fut.exception()
    finally:
        loop.close()
    assert exc is None or isinstance(exc, (BadAnswer, Disconnected, AnswerTimeout, ConnectFailed))


def test_closing_a_connection_disarms_its_request_timer() -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = _Connection(loop)
        conn.connection_made(_Transport())
        fut = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, loop.time() + 30, head_only=False)
        timer = conn._timer
        assert timer is not None
        fut.cancel()  # the caller went away (client disconnected)
        conn.close()
        assert conn._timer is None
        assert timer.cancelled()
    finally:
        loop.close()
