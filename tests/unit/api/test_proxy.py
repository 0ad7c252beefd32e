"""The proxy end to end over real HTTP on loopback: sidecar (uvicorn) → stub model server."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest
import yarl
from multidict import CIMultiDict

from app.config import AuthSettings, LoggingSettings, Settings, UpstreamSettings, ValidationSettings
from app.monitoring.profile import Profile
from tests.support.errors import protocol_error
from tests.support.sidecar import parse_metrics, run_sidecar
from tests.support.stub_upstream import StubUpstream, free_port


def v2_request(rows: list[dict[str, Any]], request_id: str = "req-1") -> dict[str, Any]:
    types = {
        "age": "INT64",
        "monthly_income": "FP64",
        "loan_amount": "FP64",
        "has_mortgage": "BOOL",
    }
    names = list(rows[0])
    return {
        "id": request_id,
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": n,
                "shape": [len(rows)],
                "datatype": types.get(n, "BYTES"),
                "data": [r[n] for r in rows],
            }
            for n in names
        ],
    }


def good_row(**over: Any) -> dict[str, Any]:
    row = {
        "age": 40,
        "monthly_income": 3000.0,
        "marital_status": "married",
        "employment": "employed",
        "loan_amount": 5000.0,
        "has_mortgage": True,
        "purpose": "renovate the kitchen",
    }
    row.update(over)
    return row


def settings(url: str, **kw: Any) -> Settings:
    return Settings(upstream=UpstreamSettings(url=url, timeout_seconds=1.0), **kw)


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    async with http.post(url, data=data, headers=hdrs) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


async def test_forwards_original_bytes_and_relays_answer_unchanged(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        body = json.dumps(v2_request([good_row(), good_row(age=50)]), indent=1).encode()
        async with aiohttp.ClientSession() as http:
            direct = await post(http, f"{up.url}/v2/models/loan/infer", body)
            via = await post(
                http,
                f"{sc.url}/v2/models/loan/infer",
                body,
                {
                    "x-request-id": "client-id-7",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                },
            )
        assert via[0] == direct[0] == 200
        assert via[2] == direct[2]
        assert via[1]["Content-Type"] == direct[1]["Content-Type"]
        assert via[1]["x-upstream"] == "stub"
        assert via[1]["x-request-id"] == "client-id-7"
        forwarded = up.state.requests[-1]
        assert forwarded["body"] == body
        assert forwarded["headers"]["traceparent"].startswith("00-4bf92f35")
        assert forwarded["headers"]["x-request-id"] == "client-id-7"
        (line,) = sc.log_lines()
        assert line["event"] == "request.completed"
        assert line["request_id"] == "client-id-7"
        assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert line["status"] == 200
        assert line["n_rows"] == 2
        assert line["model"] == "loan"
        assert line["model_version"] == "v1"
        assert line["predictions"] == {"n": 2, "mean": 0.5, "min": 0.5, "max": 0.5}
        assert line["upstream_ms"] > 0
        assert line["latency_ms"] >= line["upstream_ms"]
        assert "inputs" not in line


async def test_counters_equal_what_was_sent(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                status, headers, _ = await post(
                    http,
                    f"{sc.url}/v2/models/loan/infer",
                    v2_request([good_row(), good_row(marital_status="astronaut", age=200)]),
                )
                assert status == 200
                assert headers["x-request-id"]
            async with http.get(f"{sc.url}/metrics") as r:
                text = await r.text()
        m = parse_metrics(text)
        labels = (("model", "loan"), ("protocol", "v2"), ("status", "2xx"))
        assert m[("infersight_requests_total", labels)] == 3
        assert m[("infersight_rows_total", (("model", "loan"),))] == 6
        viol = "infersight_validation_violations_total"
        assert (
            m[
                (
                    viol,
                    (
                        ("feature", "marital_status"),
                        ("kind", "unknown_category"),
                        ("model", "loan"),
                    ),
                )
            ]
            == 3
        )
        assert m[(viol, (("feature", "age"), ("kind", "out_of_range"), ("model", "loan")))] == 3
        assert m[(viol, (("feature", "age"), ("kind", "wrong_type"), ("model", "loan")))] == 0
        unseen = (("bin", "__unseen__"), ("feature", "marital_status"), ("model", "loan"))
        assert m[("infersight_feature_bin_total", unseen)] == 3
        married = (("bin", "married"), ("feature", "marital_status"), ("model", "loan"))
        assert m[("infersight_feature_bin_total", married)] == 3
        ref = m[("infersight_reference_bin_ratio", married)]
        assert 0.3 < ref < 0.55
        age_bins = sum(
            v for (name, lab), v in m.items()
            if name == "infersight_feature_bin_total" and ("feature", "age") in lab
        )  # fmt: skip
        assert age_bins == 6
        pred = (("model", "loan"), ("output", "predict"))
        assert m[("infersight_prediction_count", pred)] == 6
        assert m[("infersight_prediction_sum", pred)] == pytest.approx(3.0)
        assert (
            "infersight_upstream_duration_seconds_count",
            (("model", "loan"), ("outcome", "ok")),
        ) in m
        assert len(sc.log_lines()) == 3


async def test_enforced_violation_is_422_naming_row_feature_kind_and_not_forwarded(
    profile: Profile,
) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            status, headers, body = await post(
                http,
                f"{sc.url}/v2/models/loan/infer",
                v2_request([good_row(), good_row(age="forty")]),
            )
        assert status == 422
        assert headers["Content-Type"] == "application/json"
        err = protocol_error(body)
        assert err["type"] == "validation_error"
        first = err["details"][0]
        assert (first["row"], first["feature"], first["kind"], first["value"]) == (
            1,
            "age",
            "wrong_type",
            "forty",
        )
        assert up.state.requests == []
        assert (
            sc.sample("infersight_rejected_requests_total", {"model": "loan", "reason": "enforce"})
            == 1
        )
        assert sc.sample("infersight_rejected_rows_total", {"model": "loan"}) == 2
        # Bins count every decoded row, rejected or not.
        assert sc.sample("infersight_rows_total", {"model": "loan"}) == 2
        assert (
            sc.sample(
                "infersight_feature_bin_total",
                {"model": "loan", "feature": "age", "bin": "__unseen__"},
            )
            == 1
        )
        (line,) = sc.log_lines()
        assert line["status"] == 422
        assert line["rejected"] == "enforce"
        assert line["violations"]["wrong_type"] == {"age": 1}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (
            b'{"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [1]}]}',
            "needs 2",
        ),
        (
            b'{"inputs": [{"name": "age", "shape": [1], "datatype": "INT99", "data": [1]}]}',
            "datatype",
        ),
    ],
)
async def test_undecodable_body_is_400_and_not_forwarded(
    profile: Profile, body: bytes, needle: str
) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            status, _, resp = await post(http, f"{sc.url}/v2/models/loan/infer", body)
        assert status == 400
        err = protocol_error(resp)
        assert err["type"] == "decode_error"
        assert needle in err["message"]
        assert up.state.requests == []
        assert (
            sc.sample("infersight_rejected_requests_total", {"model": "loan", "reason": "decode"})
            == 1
        )


async def test_body_and_row_limits_are_413(profile: Profile) -> None:
    limits = ValidationSettings(max_body_bytes=2048, max_rows=3)
    async with (
        StubUpstream() as up,
        run_sidecar(settings(up.url, validation=limits), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            big = v2_request([good_row(purpose="x" * 3000)])
            status, _, body = await post(http, f"{sc.url}/v2/models/loan/infer", big)
            assert status == 413
            assert protocol_error(body)["type"] == "payload_too_large"
            status, _, body = await post(
                http, f"{sc.url}/v2/models/loan/infer", v2_request([good_row()] * 4)
            )
            assert status == 413
            assert "4 rows" in protocol_error(body)["message"]
        assert up.state.requests == []
        assert (
            sc.sample(
                "infersight_rejected_requests_total", {"model": "loan", "reason": "too_large"}
            )
            == 2
        )


async def test_unknown_model_is_forwarded_unmonitored_as_other(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            status, _, _ = await post(http, f"{sc.url}/v2/models/mystery/infer", b'{"weird": true}')
        # The stub cannot parse it either; the point is that it was forwarded, not rejected.
        assert len(up.state.requests) == 1
        assert status >= 200
        other = {"model": "__other__", "protocol": "v2", "status": f"{status // 100}xx"}
        assert sc.sample("infersight_requests_total", other) == 1
        assert sc.sample("infersight_rows_total", {"model": "loan"}) == 0


async def test_upstream_errors_pass_through_and_faults_become_502_504(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        url = f"{sc.url}/v2/models/loan/infer"
        req = v2_request([good_row()])
        async with aiohttp.ClientSession() as http:
            up.state.mode = "error500"
            status, _, body = await post(http, url, req)
            assert status == 500
            assert json.loads(body) == {"error": "model exploded"}

            up.state.mode = "garbage"
            status, headers, body = await post(http, url, req)
            assert status == 200
            assert body == b"<html>not json"
            assert headers["Content-Type"].startswith("text/html")

            up.state.mode = "ok"
            up.state.delay = 2.0
            t0 = time.perf_counter()
            status, _, body = await post(http, url, req)
            waited = time.perf_counter() - t0
            assert status == 504
            assert protocol_error(body)["type"] == "upstream_timeout"
            assert waited < 1.9

            up.state.delay = 0.0
            up.state.mode = "drop"
            status, _, body = await post(http, url, req)
            assert status == 502
            assert protocol_error(body)["type"] == "upstream_unavailable"

            up.state.mode = "ok"
            status, _, _ = await post(http, url, req)
            assert status == 200
        assert (
            sc.sample(
                "infersight_upstream_duration_seconds_count",
                {"model": "loan", "outcome": "timeout"},
            )
            == 1
        )
        assert (
            sc.sample(
                "infersight_requests_total", {"model": "loan", "protocol": "v2", "status": "5xx"}
            )
            == 3
        )


async def test_unreachable_upstream_is_502_and_not_ready(profile: Profile) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with (
        run_sidecar(settings(dead), {"loan": profile}) as sc,
        aiohttp.ClientSession() as http,
    ):
        status, _, body = await post(
            http, f"{sc.url}/v2/models/loan/infer", v2_request([good_row()])
        )
        assert status == 502
        assert "unreachable" in protocol_error(body)["message"]
        async with http.get(f"{sc.url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["upstream"] == "down"
        async with http.get(f"{sc.url}/healthz") as r:
            assert r.status == 200
        assert sc.sample("infersight_upstream_up") == 0


async def test_passthrough_routes_reach_the_upstream(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sc.url}/v2/models/loan") as r:
                assert r.status == 200
                assert await r.json() == {"name": "loan", "platform": "stub"}
                assert r.headers["x-request-id"]
            async with http.get(f"{sc.url}/v2/health/ready") as r:
                assert r.status == 200
            async with http.get(f"{sc.url}/readyz") as r:
                assert r.status == 200
                assert await r.json() == {
                    "status": "ready",
                    "upstream": "up",
                    "circuit": None,
                    "models": ["loan"],
                }


async def test_v1_and_mlflow_protocols(profile: Profile) -> None:
    async with StubUpstream() as up:
        async with run_sidecar(settings(up.url, protocol="v1"), {"loan": profile}) as sc:
            async with aiohttp.ClientSession() as http:
                status, _, body = await post(
                    http,
                    f"{sc.url}/v1/models/loan:predict",
                    {"instances": [good_row(), good_row()]},
                )
                assert status == 200
                assert json.loads(body) == {"predictions": [0.5, 0.5]}
                status, _, body = await post(
                    http, f"{sc.url}/v1/models/loan:predict", {"instances": [good_row(age=None)]}
                )
                assert status == 422
            assert sc.sample("infersight_rows_total", {"model": "loan"}) == 3
            assert (
                sc.sample("infersight_prediction_count", {"model": "loan", "output": "predict"})
                == 2
            )
        async with run_sidecar(settings(up.url, protocol="mlflow"), {"loan": profile}) as sc:
            async with aiohttp.ClientSession() as http:
                split = {
                    "dataframe_split": {
                        "columns": list(good_row()),
                        "data": [list(good_row().values())] * 3,
                    }
                }
                status, _, body = await post(http, f"{sc.url}/invocations", split)
                assert status == 200
                assert json.loads(body) == {"predictions": [0.5] * 3}
                csv = "age,monthly_income,marital_status,employment,loan_amount,has_mortgage,purpose\n"
                csv += "40,3000,married,employed,5000,true,renovate the kitchen\n"
                status, _, _ = await post(
                    http, f"{sc.url}/invocations", csv.encode(), {"content-type": "text/csv"}
                )
                assert status == 200
            assert sc.sample("infersight_rows_total", {"model": "loan"}) == 4
            assert (
                sc.sample(
                    "infersight_requests_total",
                    {"model": "loan", "protocol": "mlflow", "status": "2xx"},
                )
                == 2
            )


async def test_payload_logging_is_sampled_and_redacted(profile: Profile) -> None:
    logs = LoggingSettings(payload=True, redact_fields=["monthly_income"], payload_max_rows=1)
    async with (
        StubUpstream() as up,
        run_sidecar(settings(up.url, logging=logs), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            await post(http, f"{sc.url}/v2/models/loan/infer", v2_request([good_row(), good_row()]))
        (line,) = sc.log_lines()
        assert line["inputs"] == [{**good_row(), "monthly_income": "[redacted]"}]
        assert line["prediction_values"] == [0.5]


async def test_metrics_token(profile: Profile) -> None:
    auth = AuthSettings(metrics_token="s3cret")  # type: ignore[arg-type]
    async with (
        StubUpstream() as up,
        run_sidecar(settings(up.url, auth=auth), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sc.url}/metrics") as r:
                assert r.status == 401
                assert (await r.json())["error"]["type"] == "unauthorized"
            async with http.get(
                f"{sc.url}/metrics", headers={"authorization": "Bearer s3cret"}
            ) as r:
                assert r.status == 200
                assert "infersight_requests_total" in await r.text()


async def test_every_response_carries_a_request_id(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/metrics", "/readyz", "/openapi.json"):
                async with http.get(sc.url + path) as r:
                    assert r.status == 200
                    assert len(r.headers["x-request-id"]) == 32
            async with http.get(sc.url + "/healthz", headers={"x-request-id": "mine"}) as r:
                assert r.headers.getall("x-request-id") == ["mine"]


async def test_unsafe_client_request_ids_are_replaced(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            for bad in ("x" * 500, "has space", "tab\there"):
                status, headers, _ = await post(
                    http,
                    f"{sc.url}/v2/models/loan/infer",
                    v2_request([good_row()]),
                    {"x-request-id": bad},
                )
                assert status == 200
                assert headers["x-request-id"] != bad
                assert len(headers["x-request-id"]) == 32
                async with http.get(f"{sc.url}/healthz", headers={"x-request-id": bad}) as r:
                    assert r.headers["x-request-id"] != bad


async def test_observe_only_forwards_and_counts(profile: Profile) -> None:
    dry_run = ValidationSettings(observe_only=True)
    async with (
        StubUpstream() as up,
        run_sidecar(settings(up.url, validation=dry_run), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            status, _, _ = await post(
                http, f"{sc.url}/v2/models/loan/infer", v2_request([good_row(age="old")])
            )
        assert status == 200
        assert len(up.state.requests) == 1
        labels = {"model": "loan", "feature": "age", "kind": "wrong_type"}
        assert sc.sample("infersight_validation_violations_total", labels) == 1


async def test_unknown_features_can_be_enforced(profile: Profile) -> None:
    strict = ValidationSettings(unknown_features="enforce")
    async with (
        StubUpstream() as up,
        run_sidecar(settings(up.url, validation=strict), {"loan": profile}) as sc,
    ):
        async with aiohttp.ClientSession() as http:
            status, _, body = await post(
                http,
                f"{sc.url}/v2/models/loan/infer",
                v2_request([good_row(favourite_colour="red")]),
            )
        assert status == 422
        detail = protocol_error(body)["details"][0]
        assert (detail["feature"], detail["kind"]) == ("favourite_colour", "unknown_feature")
        labels = {"model": "loan", "feature": "__other__", "kind": "unknown_feature"}
        assert sc.sample("infersight_validation_violations_total", labels) == 1
        assert up.state.requests == []


async def test_path_and_query_reach_the_upstream_as_sent(profile: Profile) -> None:
    async with StubUpstream() as up, run_sidecar(settings(up.url), {"loan": profile}) as sc:
        async with aiohttp.ClientSession() as http:
            url = f"{sc.url}/v2/models/loan/versions/v%201/infer?trace=a%2Fb&x=1"
            async with http.post(yarl.URL(url, encoded=True), json=v2_request([good_row()])) as r:
                assert r.status == 200
        assert (
            up.state.requests[-1]["path_qs"]
            == "/v2/models/loan/versions/v%201/infer?trace=a%2Fb&x=1"
        )
        (line,) = sc.log_lines()
        assert line["model_version"] == "v1"  # from the response, not the URL
