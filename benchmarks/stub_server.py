"""A fast model server (V2, V1 and MLflow paths) that answers without a model: isolates the
proxy's own cost."""

from __future__ import annotations

import argparse
import json

from aiohttp import web

_ANSWER_CACHE: dict[int, bytes] = {}


def _answer(n: int) -> bytes:
    body = _ANSWER_CACHE.get(n)
    if body is None:
        body = json.dumps(
            {
                "model_name": "loan",
                "model_version": "v1",
                "outputs": [
                    {"name": "predict", "shape": [n], "datatype": "INT64", "data": [0] * n}
                ],
            }
        ).encode()
        _ANSWER_CACHE[n] = body
    return body


async def infer(request: web.Request) -> web.Response:
    doc = json.loads(await request.read())
    n = int(doc["inputs"][0]["shape"][0])
    return web.Response(body=_answer(n), content_type="application/json")


_PREDICTIONS_CACHE: dict[int, bytes] = {}


def _predictions(n: int) -> bytes:
    body = _PREDICTIONS_CACHE.get(n)
    if body is None:
        body = json.dumps({"predictions": [0] * n}).encode()
        _PREDICTIONS_CACHE[n] = body
    return body


async def predict_v1(request: web.Request) -> web.Response:
    n = len(json.loads(await request.read())["instances"])
    return web.Response(body=_predictions(n), content_type="application/json")


async def invocations(request: web.Request) -> web.Response:
    n = len(json.loads(await request.read())["dataframe_split"]["data"])
    return web.Response(body=_predictions(n), content_type="application/json")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_post("/v1/models/{name}:predict", predict_v1)
    app.router.add_get("/v1/models/{name}", ready)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
