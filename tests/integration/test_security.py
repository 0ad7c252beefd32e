"""Security against a real `infersight serve` process: bearer tokens on `/admin/*`,
`/feedback` and `/metrics` (admin disabled without a token, never forwarded), redacted fields
absent from every log line, and no code path that deserializes client-named files or pickles.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from app.monitoring.profile import save_profile
from tests.conftest import loan_profile
from tests.support.sidecar_process import SidecarProcess
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "app"
ADMIN = "admin-secret-4f1c"
FEEDBACK = "feedback-secret-9a2e"
METRICS = "metrics-secret-77b0"
V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}


def row(**over: Any) -> dict[str, Any]:
    return good_row(**over)


def v2(rows: list[dict[str, Any]]) -> bytes:
    names = list(rows[0])
    return json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "shape": [len(rows)],
                    "datatype": V2_TYPES.get(n, "BYTES"),
                    "data": [r[n] for r in rows],
                }
                for n in names
            ]
        }
    ).encode()


def start(tmp_path: Path, upstream_url: str, **sections: Any) -> SidecarProcess:
    profile = tmp_path / "profile.json"
    save_profile(loan_profile(), profile)
    config = {
        "protocol": "v2",
        "profiles": [str(profile)],
        "upstream": {"url": upstream_url, "timeout_seconds": 2},
        "drift": {"enabled": True, "interval_seconds": 3600, "min_rows": 10},
        "parity": {"enabled": False},
        "feedback": {"store": "sqlite::memory:"},
        "logging": {"sink": str(tmp_path / "requests.log")},
        **sections,
    }
    path = tmp_path / "infersight.yaml"
    path.write_text(yaml.safe_dump(config))
    return SidecarProcess(path, tmp_path / "sidecar.log").start()


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    scheme: str = "Bearer",
    **kw: Any,
) -> tuple[int, dict[str, Any] | str, aiohttp.typedefs.LooseHeaders]:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["authorization"] = f"{scheme} {token}"
    async with http.request(method, url, headers=headers, **kw) as r:
        text = await r.text()
        try:
            body: dict[str, Any] | str = json.loads(text)
        except ValueError:
            body = text
        return r.status, body, r.headers


async def test_admin_is_disabled_without_a_token_and_never_forwarded(tmp_path: Path) -> None:
    async with StubUpstream() as up:
        sidecar = start(tmp_path, up.url)
        try:
            async with aiohttp.ClientSession() as http:
                for method, path in [
                    ("GET", "/admin/config"),
                    ("POST", "/admin/drift/run"),
                    ("POST", "/admin/circuit/reset"),
                    ("PUT", "/admin/log-level"),
                    ("GET", "/admin/anything/else"),
                ]:
                    status, body, _ = await call(http, method, sidecar.url + path, ADMIN)
                    assert status == 404, (path, body)
                    assert isinstance(body, dict)
                    assert body["error"]["type"] == "not_enabled"
        finally:
            sidecar.stop()
        assert not [r for r in up.state.requests if r["path"].startswith("/admin")]


async def test_tokens_guard_admin_feedback_and_metrics(tmp_path: Path) -> None:
    auth = {"admin_token": ADMIN, "feedback_token": FEEDBACK, "metrics_token": METRICS}
    async with StubUpstream() as up:
        sidecar = start(
            tmp_path, up.url, auth=auth, upstream={"url": up.url, "breaker_failures": 3}
        )
        url = sidecar.url
        try:
            async with aiohttp.ClientSession() as http:
                guarded = [
                    ("GET", "/admin/config", ADMIN, {}),
                    ("POST", "/feedback", FEEDBACK, {"json": {"feedback": []}}),
                    ("GET", "/metrics", METRICS, {}),
                ]
                for method, path, token, kw in guarded:
                    wrong = [None, token + "x", token[:-1], token.upper(), ""]
                    for bad in wrong:
                        status, body, headers = await call(http, method, url + path, bad, **kw)
                        assert status == 401, (path, bad, body)
                        assert headers["WWW-Authenticate"] == "Bearer"
                        assert isinstance(body, dict)
                        assert body["error"]["type"] == "unauthorized"
                    status, body, _ = await call(http, method, url + path, token, "Basic", **kw)
                    assert status == 401, path
                    other = next(t for _, _, t, _ in guarded if t != token)
                    status, _, _ = await call(http, method, url + path, other, **kw)
                    assert status == 401, (path, "another route's token")
                    status, body, _ = await call(http, method, url + path, token, **kw)
                    assert status == 200, (path, body)

                # the admin routes, authorised
                status, config, _ = await call(http, "GET", f"{url}/admin/config", ADMIN)
                assert status == 200
                text = json.dumps(config)
                for secret in (ADMIN, FEEDBACK, METRICS):
                    assert secret not in text
                assert isinstance(config, dict)
                assert config["upstream"]["url"] == up.url
                assert config["auth"]["admin_token"] == "**********"

                # the token is checked before the body is even read
                status, body, _ = await call(
                    http, "PUT", f"{url}/admin/log-level", None, data=b"{not json"
                )
                assert status == 401
                status, body, _ = await call(
                    http, "PUT", f"{url}/admin/log-level", ADMIN, json={"level": "loud"}
                )
                assert status == 400
                assert isinstance(body, dict)
                assert "level" in body["error"]["message"]
                status, body, _ = await call(
                    http, "PUT", f"{url}/admin/log-level", ADMIN, json={"level": "debug"}
                )
                assert (status, body) == (200, {"level": "debug", "previous": "info"})

                status, body, _ = await call(http, "POST", f"{url}/admin/drift/run", ADMIN)
                assert status == 200
                assert isinstance(body, dict)
                assert body["cycles"] == 1
                assert body["ran"] is True

                status, body, _ = await call(http, "POST", f"{url}/admin/circuit/reset", ADMIN)
                assert (status, body) == (200, {"before": "closed", "state": "closed"})
                status, _, _ = await call(http, "GET", f"{url}/admin/nope", ADMIN)
                assert status == 404
        finally:
            sidecar.stop()
        assert not [r for r in up.state.requests if r["path"].startswith("/admin")]
        changes = [
            json.loads(x) for x in sidecar.log_path.read_text().splitlines() if '"admin.' in x
        ]
        assert [(c["event"], c.get("new_level")) for c in changes] == [
            ("admin.log_level", "debug"),
            ("admin.circuit_reset", None),
        ]


async def test_redacted_fields_never_appear_in_any_log_line(tmp_path: Path) -> None:
    secrets = {
        "purpose": "SECRET-PURPOSE-31337",
        "marital_status": "SECRET-STATUS-424242",  # an unknown category: a logged violation
        "monthly_income": "SECRET-INCOME-8086",  # a type error: rejected with 422
        "ssn": "SECRET-SSN-123-45-6789",  # a feature the profile does not know
    }
    logging = {
        "sink": str(tmp_path / "requests.log"),
        "level": "debug",
        "payload": True,
        "payload_sample_rate": 1.0,
        "redact_fields": sorted(secrets),
    }
    async with StubUpstream() as up:
        sidecar = start(tmp_path, up.url, logging=logging)
        try:
            async with aiohttp.ClientSession() as http:
                url = f"{sidecar.url}/v2/models/loan/infer"
                bodies = [
                    (v2([row(purpose=secrets["purpose"]), row()]), 200),
                    (v2([row(marital_status=secrets["marital_status"])]), 200),
                    (v2([row(), row(monthly_income=secrets["monthly_income"])]), 422),
                    (v2([row(ssn=secrets["ssn"], purpose=secrets["purpose"])]), 200),
                    (v2([row(purpose=secrets["purpose"])])[:-7], 400),  # truncated
                ]
                for body, want in bodies:
                    headers = {"content-type": "application/json"}
                    async with http.post(url, data=body, headers=headers) as r:
                        assert r.status == want, await r.text()
        finally:
            sidecar.stop()
    request_log = (tmp_path / "requests.log").read_text()
    app_log = sidecar.log_path.read_text()
    lines = [json.loads(x) for x in request_log.splitlines() if x.strip()]
    assert len(lines) == 5
    logged_inputs = [x["inputs"] for x in lines if x.get("inputs")]
    assert logged_inputs, "payload logging is on: inputs must be logged"
    assert logged_inputs[0][0]["purpose"] == "[redacted]"
    assert logged_inputs[0][0]["age"] == 40  # only the configured fields are masked
    for secret in secrets.values():
        assert secret not in request_log
        assert secret not in app_log


FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


@pytest.mark.parametrize("path", sorted(APP.rglob("*.py")), ids=lambda p: str(p.relative_to(APP)))
def test_no_module_deserializes_pickles_or_evaluates_code(path: Path) -> None:
    """Nothing in the sidecar can load a pickle (a model file or a request could execute
    code), evaluate strings, or read YAML with a loader that builds objects."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & FORBIDDEN_MODULES
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] not in FORBIDDEN_MODULES
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in {"eval", "exec", "__import__"}, f"line {node.lineno}"
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if func.value.id == "yaml":
                    assert func.attr in {"safe_load", "safe_dump"}, f"line {node.lineno}"
                if func.value.id in {"numpy", "np"} and func.attr == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    allow = kw.get("allow_pickle")
                    assert isinstance(allow, ast.Constant), f"line {node.lineno}"
                    assert allow.value is False, f"line {node.lineno}"


def test_no_route_takes_a_file_path_from_the_client() -> None:
    """Profiles and stores are named by the configuration only: no route handler reads a
    path, file name or URL out of a request to open it."""
    from app.main import create_app

    app = create_app(profiles={}, configure_logs=False)
    for route in app.routes:
        params = getattr(route, "param_convertors", {})
        for name in params:
            assert name not in {"file", "filename", "path_to", "profile_path", "url"}, route
    sources = [APP / "main.py", *sorted((APP / "api").glob("*.py"))]
    for src in sources:
        tree = ast.parse(src.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{src.name} line {node.lineno} opens a file"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in {"read_text", "read_bytes", "load_profile"} or (
                    src.name == "main.py" and node.func.attr == "load_profile"
                ), f"{src.name} line {node.lineno}"
