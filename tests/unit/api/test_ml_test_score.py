"""GET /monitoring/ml-test-score and its metrics follow what the deployment really does."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from app.monitoring.profile import Profile
from tests.support.sidecar import run_sidecar
from tests.support.stub_upstream import StubUpstream
from tests.unit.api.test_feedback import feedback, make_settings, predict


async def test_monitors_become_automated_as_data_arrives(profile: Profile) -> None:
    stale = profile.model_copy(
        update={
            "model": profile.model.model_copy(
                update={"trained_at": datetime(2020, 1, 1, tzinfo=UTC)}
            )
        }
    )
    async with (
        StubUpstream() as up,
        run_sidecar(make_settings(up.url, thresholds={"mae": 0.5}), {"loan": stale}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sc.url}/monitoring/ml-test-score") as r:
                before = await r.json()
            await predict(http, sc, "m1", rows=3)
            await feedback(http, sc, {"feedback": [{"request_id": "m1", "label": 0.4}]})
            async with http.get(f"{sc.url}/monitoring/ml-test-score") as r:
                after = await r.json()
            automated = {
                m: sc.sample(
                    "infersight_ml_test_monitor_automated", {"monitor": str(m), "test": t["test"]}
                )
                for m, t in ((t["monitor"], t) for t in after["monitors"])
            }
            ok4 = sc.sample(
                "infersight_ml_test_monitor_ok",
                {"monitor": "4", "test": after["monitors"][3]["test"]},
            )

    state = {m["monitor"]: (m["automated"], m["state"]) for m in before["monitors"]}
    assert state[1] == (False, "no_data")  # no version reported before the first answer
    assert state[2] == (False, "no_data")
    assert state[3] == (False, "no_data")  # no golden rows in this profile
    assert state[4] == (True, "alerting")  # trained in 2020: older than 30 days
    assert state[5] == (False, "no_data")
    assert state[7] == (False, "no_data")
    assert before["score"] == 1

    state = {m["monitor"]: (m["automated"], m["state"]) for m in after["monitors"]}
    assert state[1] == (True, "ok")
    assert state[2] == (True, "ok")
    assert state[3] == (False, "no_data")
    assert state[5] == (True, "ok")
    assert state[6] == (True, "ok")
    assert state[7] == (True, "ok")
    assert after["score"] == after["automated"] == 6
    assert after["monitors"][0]["evidence"]["models"]["loan"]["version"] == "v1"
    assert after["monitors"][6]["evidence"]["labelled"] == {"loan": 1}
    assert automated == {1: 1, 2: 1, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1}
    assert ok4 == 0
