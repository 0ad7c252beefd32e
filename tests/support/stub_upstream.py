"""A small real HTTP model server on loopback (aiohttp) with switchable faults.

Used where a fault must be produced on demand (slow answers, 500s, garbage, dropped
connections); the happy paths are also tested against real model servers (MLServer, kserve,
MLflow) in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StubState:
    mode: str = "ok"
    """ok | slow | error500 | garbage | drop | bad_shape"""
    delay: float = 0.0
    prediction: Any = 0.5
    model_version: str = "v1"
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers on every inference answer."""
    requests: list[dict[str, Any]] = field(default_factory=list)


def _rows(doc: dict[str, Any]) -> int:
    if "inputs" in doc and isinstance(doc["inputs"], list) and doc["inputs"]:
        first = doc["inputs"][0]
        if isinstance(first, dict) and "shape" in first:
            return int(first["shape"][0]) if first["shape"] else 1
        return len(doc["inputs"])
    for key in ("instances", "dataframe_records"):
        if key in doc:
            return len(doc[key])
    if "dataframe_split" in doc:
        return len(doc["dataframe_split"]["data"])
    if "inputs" in doc and isinstance(doc["inputs"], dict):
        return len(next(iter(doc["inputs"].values())))
    return 1


def build_app(state: StubState) -> web.Application:
    def record(request: web.Request, body: bytes) -> None:
        state.requests.append(
            {
                "path": request.path,
                "path_qs": request.raw_path,
                "body": body,
                "headers": {k.lower(): v for k, v in request.headers.items()},
            }
        )

    async def fault(request: web.Request) -> web.StreamResponse | None:
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.mode == "error500":
            return web.json_response({"error": "model exploded"}, status=500)
        if state.mode == "garbage":
            return web.Response(body=b"<html>not json", content_type="text/html")
        if state.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError
        return None

    async def infer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record(request, body)
        bad = await fault(request)
        if bad is not None:
            return bad
        doc = json.loads(body)
        n = _rows(doc)
        name = request.match_info.get("name", "model")
        if state.mode == "bad_shape":
            return web.json_response({"outputs": "nope"})
        out = {
            "model_name": name,
            "model_version": state.model_version,
            "id": doc.get("id", "x"),
            "outputs": [
                {
                    "name": "predict",
                    "shape": [n],
                    "datatype": "FP64",
                    "data": [state.prediction] * n,
                }
            ],
        }
        return web.json_response(out, headers={"x-upstream": "stub", **state.headers})

    async def predict_v1(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record(request, body)
        bad = await fault(request)
        if bad is not None:
            return bad
        n = _rows(json.loads(body))
        return web.json_response({"predictions": [state.prediction] * n}, headers=state.headers)

    async def invocations(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record(request, body)
        bad = await fault(request)
        if bad is not None:
            return bad
        if request.content_type == "text/csv":
            n = len(body.decode().strip().splitlines()) - 1
        else:
            n = _rows(json.loads(body))
        return web.json_response({"predictions": [state.prediction] * n}, headers=state.headers)

    async def ready(_: web.Request) -> web.StreamResponse:
        if state.mode == "down":
            return web.Response(status=503)
        return web.Response(status=200)

    async def meta(request: web.Request) -> web.StreamResponse:
        return web.json_response({"name": request.match_info.get("name", ""), "platform": "stub"})

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", infer)
    app.router.add_post("/v1/models/{name}:predict", predict_v1)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/health/live", ready)
    app.router.add_get("/ping", ready)
    app.router.add_get("/v2/models/{name}", meta)
    app.router.add_get("/v1/models/{name}", meta)
    return app


class StubUpstream:
    """Run the stub on a free loopback port inside the current event loop."""

    def __init__(self) -> None:
        self.state = StubState()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> StubUpstream:
        self._runner = web.AppRunner(build_app(self.state), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
