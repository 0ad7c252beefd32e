"""Served versions for protocols whose answers do not name one: configured, or from a header."""

from __future__ import annotations

import aiohttp

from app.config import LifecycleSettings, Settings, UpstreamSettings
from app.monitoring.profile import Profile
from tests.support.sidecar import RunningSidecar, run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_proxy import good_row


async def invoke(http: aiohttp.ClientSession, sc: RunningSidecar) -> None:
    body = {"dataframe_records": [good_row(), good_row()]}
    async with http.post(f"{sc.url}/invocations", json=body) as r:
        assert r.status == 200, await r.text()


def versions(sc: RunningSidecar) -> set[str]:
    return {
        s.labels["version"]
        for family in sc.registry.collect()
        if family.name == "infersight_model_info"
        for s in family.samples
    }


async def test_mlflow_version_from_configuration_and_header(profile: Profile) -> None:
    async with StubUpstream() as up:
        settings = Settings(
            protocol="mlflow",
            upstream=UpstreamSettings(url=up.url),
            lifecycle=LifecycleSettings(model_version="7", version_header="X-Model-Version"),
        )
        async with run_sidecar(settings, {"loan": profile}) as sc, aiohttp.ClientSession() as http:
            assert versions(sc) == {"7"}  # configured: what the sidecar starts from
            await invoke(http, sc)
            assert versions(sc) == {"7"}  # no header yet: nothing observed
            up.state.headers = {"X-Model-Version": "8"}
            await invoke(http, sc)
            up.state.headers = {"X-Model-Version": "9 (canary)"}
            await invoke(http, sc)
            assert versions(sc) == {"9__canary_"}  # a bounded, label-safe spelling
            changes = sc.sample("infersight_model_version_changes_total", {"model": "loan"})
            lines = [line for line in sc.log_lines() if line.get("event") == "request.completed"]
    assert changes == 1  # 8 was the first observed version; 8 -> 9 is a change
    assert [line["model_version"] for line in lines] == ["7", "8", "9 (canary)"]
