"""A bug in the sidecar's monitoring never fails a prediction: before forwarding, the request
goes to the model server unchecked (fail open); after the answer, the client has it and the
log line is still written. Both are counted and logged with their traceback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from app.config import Settings, UpstreamSettings
from app.monitoring.profile import Profile
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row, v2_request


async def test_an_observer_that_raises_keeps_the_answer_and_the_log_line(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with StubUpstream() as up:
        settings = Settings(upstream=UpstreamSettings(url=up.url))
        async with run_sidecar(settings, {"loan": profile}) as sc:
            model = sc.app.state.infersight.router.models["loan"]
            assert model.windows is not None

            def broken(*_: Any) -> None:
                raise ValueError("a bug in the windows")

            monkeypatch.setattr(model.windows, "observe_inputs", broken)
            body = json.dumps(v2_request([good_row()], "req-broken")).encode()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{sc.url}/v2/models/loan/infer",
                    data=body,
                    headers={"content-type": "application/json", "x-request-id": "req-broken"},
                ) as r:
                    assert r.status == 200
                    assert (await r.json())["outputs"][0]["data"] == [0.5]
            lines = sc.log_lines()
    assert [(x["request_id"], x["status"]) for x in lines] == [("req-broken", 200)]
    assert any("request.observe_failed" in rec.getMessage() for rec in caplog.records)
    labels = {"model": "loan", "stage": "observe"}
    assert sc.sample("infersight_monitoring_errors_total", labels) == 1


async def test_a_validator_that_raises_forwards_the_request_unchecked(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with StubUpstream() as up:
        settings = Settings(upstream=UpstreamSettings(url=up.url))
        async with run_sidecar(settings, {"loan": profile}) as sc:
            model = sc.app.state.infersight.router.models["loan"]
            assert model.validator is not None

            def broken(*_: Any, **__: Any) -> None:
                raise KeyError("a bug in the validator")

            monkeypatch.setattr(model.validator, "validate", broken)
            body = json.dumps(v2_request([good_row()], "req-unchecked")).encode()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{sc.url}/v2/models/loan/infer",
                    data=body,
                    headers={"content-type": "application/json"},
                ) as r:
                    assert r.status == 200
            lines = sc.log_lines()
    assert [r["body"] for r in up.state.requests] == [body]  # forwarded byte for byte
    assert [x["status"] for x in lines] == [200]
    assert any("request.check_failed" in rec.getMessage() for rec in caplog.records)
    labels = {"model": "loan", "stage": "check"}
    assert sc.sample("infersight_monitoring_errors_total", labels) == 1
