"""A raw-socket V2 model server on loopback whose answer is chosen per request by the
`x-fault` header: the faults a real model server shows (hangs, truncated or non-HTTP answers,
resets, 5xx, garbage bodies) produced byte for byte, which an HTTP framework would not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct

from tests.support.stub_upstream import free_port

FAULTS = {
    "ok": "a valid V2 answer",
    "hang": "reads the request and never answers",
    "slow": "answers after `slow_seconds`",
    "status500": "500 with a JSON error (the model server's own status)",
    "status503": "503 with Retry-After (the model server's own status)",
    "garbage": "200 with an HTML body",
    "bad_shape": "200 with JSON whose outputs are not tensors",
    "truncated": "Content-Length 1000, then 10 bytes and a close",
    "not_http": "a line that is not an HTTP status line",
    "reset": "a TCP reset right after the request",
    "close_in_headers": "closes halfway through the headers",
    "chunked_truncated": "a chunked body cut off inside a chunk",
}


def _answer(
    status: str, body: bytes, extra: str = "", content_type: str = "application/json"
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _v2_answer(rows: int) -> bytes:
    doc = {
        "model_name": "loan",
        "model_version": "v1",
        "outputs": [{"name": "predict", "shape": [rows], "datatype": "FP64", "data": [0.5] * rows}],
    }
    return _answer("200 OK", json.dumps(doc).encode())


def _rows(body: bytes) -> int:
    try:
        return int(json.loads(body)["inputs"][0]["shape"][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return 1


class FaultUpstream:
    """Serves on a free loopback port inside the current event loop; `seen` counts requests
    per fault."""

    def __init__(self, slow_seconds: float = 2.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.slow_seconds = slow_seconds
        self.seen: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FaultUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                fault = headers.get("x-fault", "ok")
                self.seen[fault] = self.seen.get(fault, 0) + 1
                if not await self._answer(fault, body, reader, writer):
                    return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._writers.discard(writer)

    async def _answer(
        self,
        fault: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Write the fault's answer; False when the connection is finished."""
        if fault == "hang":
            await reader.read()  # until the client gives up and closes
            return False
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            writer.write(_v2_answer(_rows(body)))
        elif fault == "ok":
            writer.write(_v2_answer(_rows(body)))
        elif fault == "status500":
            writer.write(_answer("500 Internal Server Error", b'{"error": "model exploded"}'))
        elif fault == "status503":
            writer.write(
                _answer("503 Service Unavailable", b'{"error": "loading"}', "retry-after: 3\r\n")
            )
        elif fault == "garbage":
            writer.write(_answer("200 OK", b"<html>not json", content_type="text/html"))
        elif fault == "bad_shape":
            writer.write(_answer("200 OK", b'{"outputs": "nope"}'))
        elif fault == "truncated":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
            await writer.drain()
            return False
        elif fault == "not_http":
            writer.write(b"HELLO THERE\r\n\r\n")
            await writer.drain()
            return False
        elif fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        elif fault == "close_in_headers":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-ty")
            await writer.drain()
            return False
        elif fault == "chunked_truncated":
            writer.write(b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n40\r\n{"outputs"')
            await writer.drain()
            return False
        else:
            writer.write(_answer("400 Bad Request", b'{"error": "unknown fault"}'))
        await writer.drain()
        return True
