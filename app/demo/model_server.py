"""A small Open Inference Protocol (KServe V2) JSON model server for the demo model.

Routes: `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]`,
`/v2/models/{name}[/versions/{v}]/ready`, `POST /v2/models/{name}[/versions/{v}]/infer`.
Requests hold one tensor per feature (shape [n] or [n, 1]) or one 2-D tensor [n, 7] in
`data.FEATURES` order. Bad requests get 400 `{"error": "..."}`, unknown models 404.

Demo knobs: `POST /demo/control` with `{"delay_ms": 250}` and/or `{"version": "v2-buggy"}`
slows every inference down or switches the version served by the unversioned routes.
`candidate_state()` is the demo's shadow candidate: one version, `v1.1-candidate`.
`serve()` runs the app with uvicorn on a background thread, bound to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from sklearn.pipeline import Pipeline
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.demo.data import FEATURES
from app.demo.model import (
    BUGGY_VERSION,
    CANDIDATE_VERSION,
    GOOD_VERSION,
    MODEL_NAME,
    BuggyModel,
    GoodModel,
    Model,
    train,
    train_candidate,
)

MAX_DELAY_MS = 60_000.0
INPUT_DATATYPES = {
    "age": "INT64",
    "monthly_income": "FP64",
    "marital_status": "BYTES",
    "employment": "BYTES",
    "loan_amount": "FP64",
    "has_mortgage": "BOOL",
    "purpose": "BYTES",
}
OUTPUTS = (("predict", "INT64", [-1, 1]), ("predict_proba", "FP64", [-1]))
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64"})
_UINT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_MAX_DEPTH = 8


class BadRequest(ValueError):
    """The request is not a valid inference request (answered 400)."""


class NotFound(LookupError):
    """No such model or version (answered 404)."""


@dataclass
class ServerState:
    """The models by version and the demo knobs (mutable at runtime)."""

    name: str
    models: dict[str, Model]
    version: str
    delay_ms: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model(self, version: str | None) -> tuple[str, Model]:
        """The model for a version (None: the current one)."""
        chosen = self.version if version is None else version
        try:
            return chosen, self.models[chosen]
        except KeyError:
            raise NotFound(f"model '{self.name}' has no version '{chosen}'") from None

    def control(self, doc: Any) -> None:
        """Apply `{"delay_ms": float, "version": str}` (both optional).

        Raises:
            BadRequest: unknown keys, a negative or huge delay, or an unknown version.
        """
        if not isinstance(doc, dict):
            raise BadRequest("control body must be a JSON object")
        unknown = set(doc) - {"delay_ms", "version"}
        if unknown:
            raise BadRequest(f"unknown control keys: {', '.join(sorted(unknown))}")
        delay = doc.get("delay_ms", self.delay_ms)
        if type(delay) not in (int, float) or not 0 <= delay <= MAX_DELAY_MS:
            raise BadRequest(f"delay_ms must be a number between 0 and {MAX_DELAY_MS:.0f}")
        version = doc.get("version", self.version)
        if version not in self.models:
            raise BadRequest(f"version must be one of {', '.join(self.models)}")
        with self.lock:
            self.delay_ms = float(delay)
            self.version = version

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "delay_ms": self.delay_ms,
            "versions": list(self.models),
        }


def demo_state(pipeline: Pipeline, name: str = MODEL_NAME) -> ServerState:
    """The demo's two versions of one trained pipeline: good `v1` and buggy `v2-buggy`."""
    models: dict[str, Model] = {
        GOOD_VERSION: GoodModel(pipeline),
        BUGGY_VERSION: BuggyModel(pipeline),
    }
    return ServerState(name=name, models=models, version=GOOD_VERSION)


def candidate_state(pipeline: Pipeline, name: str = MODEL_NAME) -> ServerState:
    """The shadow candidate's server: one version, `CANDIDATE_VERSION`, of a retrained pipeline
    (`model.train_candidate`), under the same model name and routes as the primary."""
    return ServerState(
        name=name, models={CANDIDATE_VERSION: GoodModel(pipeline)}, version=CANDIDATE_VERSION
    )


def _flatten(data: Any, where: str, depth: int = 0) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if depth > _MAX_DEPTH:
        raise BadRequest(f"{where}: 'data' is nested too deeply")
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item, where, depth + 1))
        else:
            out.append(item)
    return out


def _check_value(value: Any, datatype: str) -> bool:
    if value is None:
        return True
    kind = type(value)
    if datatype == "BOOL":
        return kind is bool
    if datatype in _INT_TYPES:
        return kind is int
    if datatype in _UINT_TYPES:
        return kind is int and value >= 0
    if datatype in _FLOAT_TYPES:
        return kind in (int, float)
    return kind in (str, int, float, bool)  # BYTES: any scalar


def parse_tensor(raw: Any, where: str) -> tuple[str, list[int], list[Any]]:
    """Validate one input tensor: (name, shape, flat data).

    Raises:
        BadRequest: a field is missing or inconsistent, or a value does not fit the datatype.
    """
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where} needs a non-empty string 'name'")
    where = f"input '{name}'"
    shape = raw.get("shape")
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
        raise BadRequest(f"{where}: 'shape' must be a non-empty list of non-negative integers")
    datatype = raw.get("datatype")
    if datatype not in _INT_TYPES | _UINT_TYPES | _FLOAT_TYPES | {"BOOL", "BYTES"}:
        raise BadRequest(f"{where}: unsupported datatype {datatype!r}")
    if "data" not in raw:
        raise BadRequest(f"{where} has no 'data'")
    flat = _flatten(raw["data"], where)
    if len(flat) != math.prod(shape):
        raise BadRequest(f"{where}: shape {shape} needs {math.prod(shape)} values, got {len(flat)}")
    bad = next((v for v in flat if not _check_value(v, datatype)), None)
    if bad is not None:
        raise BadRequest(f"{where}: value {bad!r} does not fit datatype {datatype}")
    return name, shape, flat


def parse_inputs(doc: Any) -> tuple[int, dict[str, list[Any]]]:
    """Decode a V2 request body into (rows, columns by feature name).

    Raises:
        BadRequest: the body is not a valid request for this model.
    """
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("body needs a non-empty 'inputs' list")
    tensors = [parse_tensor(raw, f"inputs[{i}]") for i, raw in enumerate(inputs)]
    if len(tensors) == 1 and tensors[0][0] not in FEATURES:
        name, shape, flat = tensors[0]
        width = len(FEATURES)
        if len(shape) != 2 or shape[1] != width:
            raise BadRequest(
                f"input '{name}' is not a feature, so it must be a 2-D tensor [n, {width}] "
                f"in the order {', '.join(FEATURES)}; its shape is {shape}"
            )
        return shape[0], {f: flat[j::width] for j, f in enumerate(FEATURES)}
    names = [t[0] for t in tensors]
    if len(set(names)) != len(names):
        raise BadRequest("an input name appears more than once")
    n = tensors[0][1][0]
    columns: dict[str, list[Any]] = {}
    for name, shape, flat in tensors:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"input '{name}' must have shape [n] or [n, 1], not {shape}")
        if shape[0] != n:
            raise BadRequest(f"input '{name}' has {shape[0]} rows, input '{names[0]}' has {n}")
        if name in FEATURES:
            columns[name] = flat
    return n, columns


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _requested_outputs(doc: dict[str, Any]) -> set[str] | None:
    raw = doc.get("outputs")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(o, dict) for o in raw):
        raise BadRequest("'outputs' must be a list of objects")
    names = {o.get("name") for o in raw}
    known = {name for name, _, _ in OUTPUTS}
    if not names <= known:
        raise BadRequest(f"unknown outputs requested; this model has {', '.join(sorted(known))}")
    return {str(n) for n in names}


class _Handlers:
    """Route handlers over one `ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def _model(self, request: Request) -> tuple[str, Model]:
        name = request.path_params["name"]
        if name != self.state.name:
            raise NotFound(f"model '{name}' not found")
        return self.state.model(request.path_params.get("version"))

    async def server(self, request: Request) -> Response:
        return _json({"name": "infersight-demo-model-server", "version": "0.1.0", "extensions": []})

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        return _json({"ready": True})

    async def metadata(self, request: Request) -> Response:
        self._model(request)
        return _json(
            {
                "name": self.state.name,
                "versions": list(self.state.models),
                "platform": "sklearn",
                "inputs": [
                    {"name": n, "datatype": d, "shape": [-1]} for n, d in INPUT_DATATYPES.items()
                ],
                "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in OUTPUTS],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        version, _ = self._model(request)
        return _json({"name": self.state.name, "version": version, "ready": True})

    async def infer(self, request: Request) -> Response:
        version, model = self._model(request)
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        n, columns = parse_inputs(doc)
        wanted = _requested_outputs(doc)
        request_id = doc.get("id")
        delay = self.state.delay_ms
        if delay:
            await asyncio.sleep(delay / 1000.0)
        try:
            classes, proba = model.predict(columns)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        outputs = [
            {"name": "predict", "datatype": "INT64", "shape": [n, 1], "data": classes},
            {"name": "predict_proba", "datatype": "FP64", "shape": [n], "data": proba},
        ]
        return _json(
            {
                "model_name": self.state.name,
                "model_version": version,
                "id": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
                "parameters": {"content_type": "np"},
                "outputs": [o for o in outputs if wanted is None or o["name"] in wanted],
            }
        )

    async def get_control(self, request: Request) -> Response:
        return _json(self.state.as_dict())

    async def post_control(self, request: Request) -> Response:
        try:
            doc = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        self.state.control(doc)
        return _json(self.state.as_dict())


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(str(exc), 400)
        except NotFound as exc:
            return _error(str(exc.args[0]), 404)

    return guarded


def create_app(state: ServerState) -> Starlette:
    """The V2 model server app over `state`."""
    h = _Handlers(state)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2", _guard(h.server)),
        Route("/v2/health/live", _guard(h.live)),
        Route("/v2/health/ready", _guard(h.ready)),
        Route("/demo/control", _guard(h.get_control), methods=["GET"]),
        Route("/demo/control", _guard(h.post_control), methods=["POST"]),
    ]
    for prefix in (model, versioned):
        routes += [
            Route(prefix, _guard(h.metadata)),
            Route(prefix + "/ready", _guard(h.model_ready)),
            Route(prefix + "/infer", _guard(h.infer), methods=["POST"]),
        ]
    return Starlette(routes=routes)


class BackgroundServer:
    """A uvicorn server on its own thread and event loop, on a socket bound at construction.

    Binding up front makes a busy port fail fast with `OSError`; `port=0` picks a free port.
    """

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"model-server-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections.

        Raises:
            RuntimeError: the server did not start within `timeout` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"model server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread (at most `timeout` seconds)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(state: ServerState, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve `state` on host:port (0: any free port) in the background, started."""
    server = BackgroundServer(create_app(state), host, port)
    server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    """`python -m app.demo.model_server [--port P]`: train the demo model and serve it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--candidate", action="store_true", help=f"serve the shadow candidate {CANDIDATE_VERSION}"
    )
    args = parser.parse_args(argv)
    state = (
        candidate_state(train_candidate(args.seed))
        if args.candidate
        else demo_state(train(seed=args.seed))
    )
    config = uvicorn.Config(
        create_app(state),
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        ws="none",
        log_level="info",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
