"""Schemathesis against the sidecar's own OpenAPI document, over real HTTP on loopback.

For each protocol the real sidecar (uvicorn) runs in front of the stub model server, both in a
background thread with their own event loop (schemathesis' pytest integration is synchronous).
Every operation of `/openapi.json` is fuzzed (examples, coverage and fuzzing phases, positive
and negative data), bounded and seeded. A last run puts the sidecar in front of a faulty
upstream (slow past the timeout, or dropping connections) to exercise the 502/504 answers.

Checks: no 5xx from the sidecar itself (502/504 only while the upstream is faulty; any other
5xx only when the model server answered it and the sidecar relayed it), documented status
codes, content types and response schemas; and afterwards, that the fuzzer's bodies reached
the inference routes (stub's record, request and rejection counters).
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.transport import SerializationContext

from app.config import Settings, UpstreamSettings, ValidationSettings
from app.main import create_app
from tests.conftest import loan_profile
from tests.support.sidecar import RunningSidecar, run_sidecar
from tests.support.stub_upstream import StubUpstream, build_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEED = 20261201
MAX_EXAMPLES = 25
"""Fuzzing-phase cases per operation (the examples and coverage phases add their own)."""
FAULTY_EXAMPLES = 30
UPSTREAM_TIMEOUT = 0.3
FAULTY = "v2-faulty-upstream"
RUNS = ["v2", "v1", "mlflow", FAULTY]
INFERENCE_PATHS = {
    "v2": {"/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"},
    "v1": {"/v1/models/{name}:predict"},
    "mlflow": {"/invocations"},
}
FAULTY_PATHS = {"/v2/models/{name}/infer"}
CHECK_NAMES = (
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
"""Not `not_a_server_error` (replaced by `assert_no_sidecar_5xx`, which knows which 5xx are
relayed upstream answers); not `negative_data_rejection`/`positive_data_acceptance`: the
sidecar forwards what it cannot judge (an `id` of the wrong type, say) and rejects schema-valid
bodies whose tensors disagree (shape vs data), both by design."""


@schemathesis.serializer("text/csv")
def _csv(ctx: SerializationContext, value: Any) -> bytes:
    """MLflow's CSV body: the generated string as a one-column table (header `value`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["value"])
    writer.writerow([value])
    return out.getvalue().encode()


def absurd_rows(body: bytes) -> bool:
    """A V2 body whose first tensor claims more rows than a test would ever send."""
    try:
        first = json.loads(body)["inputs"][0]
        rows = first["shape"][0]
    except (ValueError, LookupError, TypeError):
        return False
    return type(rows) is not int or not 0 <= rows <= 10_000


class RecordingStub(StubUpstream):
    """The stub model server, also noting the status it answered for each request id."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: dict[str, int] = {}

    async def __aenter__(self) -> RecordingStub:
        app = build_app(self.state)

        @web.middleware
        async def note(request: web.Request, handler: Any) -> web.StreamResponse:
            rid = request.headers.get("x-request-id", "")
            if request.path.endswith("/infer") and absurd_rows(await request.read()):
                # Unprofiled models' bodies reach the stub undecoded; it would build a list of
                # `shape[0]` predictions. A real server refuses such a shape, and so does this.
                self.answered[rid] = 400
                return web.json_response({"error": "shape does not fit"}, status=400)
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException as exc:
                self.answered[rid] = exc.status
                raise
            except Exception:
                self.answered[rid] = 500  # aiohttp answers an unhandled error with 500
                raise
            self.answered[rid] = response.status
            return response

        app.middlewares.append(note)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self


@dataclass
class Stack:
    """A sidecar in front of the stub, and what the fuzzer did to them."""

    run: str
    protocol: str
    sidecar: RunningSidecar
    stub: RecordingStub
    ids: Iterator[int] = field(default_factory=itertools.count)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def faulty(self) -> bool:
        return self.run == FAULTY

    def total(self, name: str, **labels: str) -> float:
        """A counter's sum over the series matching `labels`."""
        return sum(
            s.value
            for metric in self.sidecar.registry.collect()
            for s in metric.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


class LoopThread:
    """An event loop in a background thread; coroutines are run on it from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Stacks:
    """The sidecar-and-stub stacks of this module, started on first use, all on one loop."""

    def __init__(self) -> None:
        self.loop = LoopThread()
        self.exits = AsyncExitStack()
        self.started: dict[str, Stack] = {}

    def get(self, run: str) -> Stack:
        if run not in self.started:
            self.started[run] = self.loop.run(self._start(run))
        return self.started[run]

    async def _start(self, run: str) -> Stack:
        protocol = "v2" if run == FAULTY else run
        stub = await self.exits.enter_async_context(RecordingStub())
        settings_ = Settings(
            protocol=protocol,
            upstream=UpstreamSettings(url=stub.url, timeout_seconds=UPSTREAM_TIMEOUT),
            # MLflow names no model: observing only lets decodable bodies through to the stub.
            validation=ValidationSettings(observe_only=protocol == "mlflow"),
        )
        sidecar = await self.exits.enter_async_context(
            run_sidecar(settings_, {"loan": loan_profile()})
        )
        return Stack(run, protocol, sidecar, stub)

    def close(self) -> None:
        try:
            self.loop.run(self.exits.aclose())
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def stacks() -> Iterator[Stacks]:
    running = Stacks()
    try:
        yield running
    finally:
        running.close()


def openapi_document(protocol: str) -> dict[str, Any]:
    """The document the sidecar serves at /openapi.json for a protocol."""
    app = create_app(Settings(protocol=protocol), profiles={}, configure_logs=False)
    return app.openapi()


def config(coverage: bool = True) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": coverage}},
        }
    )


DOCUMENTS = {protocol: openapi_document(protocol) for protocol in INFERENCE_PATHS}
SCHEMAS = {p: schemathesis.openapi.from_dict(doc, config=config()) for p, doc in DOCUMENTS.items()}
# Each faulty-upstream case waits up to the timeout: fuzzing phase only, one operation.
FAULTY_SCHEMA = schemathesis.openapi.from_dict(DOCUMENTS["v2"], config=config(coverage=False))
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def assert_no_sidecar_5xx(
    stack: Stack, case: schemathesis.Case, status: int, request_id: str
) -> None:
    """5xx only when documented: 502/504 from a faulty upstream, 503 from /readyz while the
    model server is not ready, or the model server's own 5xx relayed unchanged."""
    if status < 500:
        return
    path = case.operation.path
    upstream_said = stack.stub.answered.get(request_id)
    if upstream_said == status:
        return  # the model server's answer, passed through as documented
    if stack.faulty and status in (502, 504):
        return
    if path == "/readyz" and status == 503:
        return
    raise AssertionError(
        f"{status} from the sidecar on {path} (the model server answered {upstream_said})"
    )


def fuzz_one(stack: Stack, case: schemathesis.Case) -> None:
    """Send one case with a unique request id; check the answer."""
    n = next(stack.ids)
    request_id = f"fuzz-{stack.run}-{n}"
    name = (case.path_parameters or {}).get("name")
    if isinstance(name, str) and zlib.crc32(repr(case.body).encode()) % 2 == 0:
        # Half the named calls go to the profiled model (decoded and validated), the others
        # to unprofiled names (forwarded unmonitored).
        case.path_parameters = {**(case.path_parameters or {}), "name": "loan"}
    if stack.faulty:  # alternate the two faults: too slow (504), connection dropped (502)
        stack.stub.state.mode = "drop" if n % 2 else "ok"
        stack.stub.state.delay = 0.0 if n % 2 else 2 * UPSTREAM_TIMEOUT
    response = case.call(base_url=stack.sidecar.url, headers={"x-request-id": request_id})
    if case.method.upper() == "POST":  # the coverage phase also probes other methods
        stack.cases[case.operation.path] += 1
    stack.statuses[case.operation.path, response.status_code] += 1
    assert_no_sidecar_5xx(stack, case, response.status_code, request_id)
    relayed = stack.stub.answered.get(request_id) == response.status_code
    # A relayed answer is the model server's body (the stub echoes a fuzzed `id`, say): its
    # schema is the model server's business; the sidecar's own answers are checked in full.
    names = [n for n in CHECK_NAMES if not (relayed and n == "response_schema_conformance")]
    case.validate_response(response, checks=[CHECKS.get_one(name) for name in names])


@SCHEMAS["v2"].parametrize()
@FUZZ_SETTINGS
def test_fuzz_v2(case: schemathesis.Case, stacks: Stacks) -> None:
    fuzz_one(stacks.get("v2"), case)


@SCHEMAS["v1"].parametrize()
@FUZZ_SETTINGS
def test_fuzz_v1(case: schemathesis.Case, stacks: Stacks) -> None:
    fuzz_one(stacks.get("v1"), case)


@SCHEMAS["mlflow"].parametrize()
@FUZZ_SETTINGS
def test_fuzz_mlflow(case: schemathesis.Case, stacks: Stacks) -> None:
    fuzz_one(stacks.get("mlflow"), case)


@FAULTY_SCHEMA.include(path=next(iter(FAULTY_PATHS))).parametrize()
@settings(FUZZ_SETTINGS, max_examples=FAULTY_EXAMPLES)
def test_fuzz_v2_faulty_upstream(case: schemathesis.Case, stacks: Stacks) -> None:
    fuzz_one(stacks.get(FAULTY), case)


@pytest.mark.parametrize("run", RUNS)
def test_fuzz_reached_the_inference_routes(run: str, stacks: Stacks) -> None:
    """The fuzz runs above (same module, run first) sent bodies through the proxy: the schema
    reaches the fast path, and the served document is the one fuzzed."""
    stack = stacks.get(run)
    served = requests.get(f"{stack.sidecar.url}/openapi.json", timeout=10).json()
    assert served == DOCUMENTS[stack.protocol]
    paths = FAULTY_PATHS if stack.faulty else INFERENCE_PATHS[stack.protocol]
    fuzzed = {p: stack.cases[p] for p in paths}
    assert all(n >= MAX_EXAMPLES for n in fuzzed.values()), (fuzzed, dict(stack.cases))
    # Profiled and unprofiled names; negative cases with a name the fast path does not take
    # (a ':' or an encoded '/') are passed through unmonitored, hence the margin.
    answered = stack.total("infersight_requests_total")
    assert answered >= sum(fuzzed.values()) * 0.9, (answered, fuzzed)
    assert stack.total("infersight_rejected_requests_total", model="loan") > 0
    forwarded = [r for r in stack.stub.state.requests if r["headers"].get("x-request-id")]
    assert len(forwarded) > 0
    codes = Counter(code for (p, code), n in stack.statuses.items() if p in paths for _ in range(n))
    if stack.faulty:
        assert codes[502] > 0, codes
        assert codes[504] > 0, codes
    else:
        assert codes[200] > 0, codes
        assert codes[400] + codes[422] > 0, codes
