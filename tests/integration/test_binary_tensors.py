"""The V2 binary tensor extension over HTTP, end to end: tritonclient → sidecar → model server.

Requests go to the real KServe model server (which reads binary inputs). It always answers
with JSON outputs (the loan model builds its own response), so binary *answers* come from a
small aiohttp model server below that frames its outputs the way Triton does.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_aio
from aiohttp import web
from tritonclient.utils import InferenceServerException

from app.config import Settings, ShadowSettings, UpstreamSettings
from app.demo.data import FEATURES, generate
from app.monitoring.profile import Profile
from tests.integration.servers.harness import RunningServer
from tests.integration.test_sidecar_real_servers import (
    metric,
    post,
    profile_from_predictions,
    subset,
    v2_body,
    without_nulls,
)
from tests.support.errors import protocol_error
from tests.support.sidecar import RunningSidecar, parse_metrics, run_sidecar
from tests.support.stub_upstream import free_port

pytestmark = pytest.mark.integration

HEADER = "inference-header-content-length"
TYPES = {"age": np.int64, "monthly_income": np.float64, "loan_amount": np.float64}
DATATYPES = {
    "age": "INT64",
    "monthly_income": "FP64",
    "loan_amount": "FP64",
    "has_mortgage": "BOOL",
}
TIMING = ("duration", "latency", "upstream", "seconds")


def triton_inputs(cols: dict[str, list[Any]]) -> list[triton_http.InferInput]:
    """One binary tensor per feature, as tritonclient sends them by default."""
    inputs = []
    for f in FEATURES:
        datatype = DATATYPES.get(f, "BYTES")
        if datatype == "BYTES":
            array = np.array([v.encode() for v in cols[f]], dtype=object)
        elif datatype == "BOOL":
            array = np.array(cols[f], dtype=bool)
        else:
            array = np.array(cols[f], dtype=TYPES[f])
        t = triton_http.InferInput(f, [len(cols[f])], datatype)
        t.set_data_from_numpy(array, binary_data=True)
        inputs.append(t)
    return inputs


def binary_body(cols: dict[str, list[Any]], request_id: str) -> tuple[bytes, dict[str, str]]:
    """tritonclient's own request body and headers for these rows."""
    outputs = [triton_http.InferRequestedOutput("predict", binary_data=True)]
    body, length = triton_http.InferenceServerClient.generate_request_body(
        triton_inputs(cols), outputs, request_id=request_id
    )
    assert length is not None
    return body, {HEADER: str(length), "content-type": "application/octet-stream"}


async def post_raw(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


def model_samples(sc: RunningSidecar, text: str) -> dict[Any, float]:
    """The model's monitoring samples, without timings (which differ run to run)."""
    return {
        (name, labels): value
        for (name, labels), value in parse_metrics(text).items()
        if name.startswith("infersight_")
        and ("model", "loan") in labels
        and not name.endswith("_created")
        and not any(word in name for word in TIMING)
    }


def comparable(line: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in line.items() if k not in ("time", "timestamp", "latency_ms", "upstream_ms")
    }


def clean(cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Binary tensors have no null: fill missing incomes as a client would."""
    return without_nulls(cols)


@pytest.fixture(scope="module")
def loan_profile_cols() -> dict[str, list[Any]]:
    return clean(generate(300, seed=41))


async def kserve_profile(kserve_server: RunningServer, train: dict[str, list[Any]]) -> Profile:
    async with aiohttp.ClientSession() as http:
        status, _, body = await post(
            http, f"{kserve_server.url}/v2/models/loan/infer", v2_body(train, "profile")
        )
    assert status == 200, body
    predicted = next(o for o in json.loads(body)["outputs"] if o["name"] == "predict")["data"]
    return profile_from_predictions(train, predicted, "predict")


async def test_tritonclient_binary_through_sidecar_equals_direct_and_json(
    kserve_server: RunningServer, loan_profile_cols: dict[str, list[Any]]
) -> None:
    profile = await kserve_profile(kserve_server, loan_profile_cols)
    settings = Settings(upstream=UpstreamSettings(url=kserve_server.url, timeout_seconds=10))
    traffic = clean(generate(80, seed=42))
    traffic["marital_status"][3] = "martian"  # an unknown category: observed, forwarded
    traffic["purpose"][5] = "Zürich — 東京"  # multi-byte UTF-8 in a BYTES tensor
    sizes = [1, 3, 16, 32]
    infer = "/v2/models/loan/infer"
    async with (
        run_sidecar(settings, {"loan": profile}) as binary_sc,
        run_sidecar(settings, {"loan": profile}) as json_sc,
        aiohttp.ClientSession() as http,
    ):
        direct = triton_aio.InferenceServerClient(kserve_server.url.removeprefix("http://"))
        via = triton_aio.InferenceServerClient(binary_sc.url.removeprefix("http://"))

        async def as_json(cols: dict[str, list[Any]], rid: str) -> tuple[int, bytes]:
            """The same rows as JSON tensors, through the second sidecar."""
            headers = {"content-type": "application/json", "x-request-id": rid}
            status, _, answer = await post_raw(
                http, f"{json_sc.url}{infer}", v2_body(cols, rid), headers
            )
            return status, answer

        try:
            # Health and metadata pass through unchanged, the model server's own errors too.
            for ask in (
                lambda c: c.is_server_live(),
                lambda c: c.is_server_ready(),
                lambda c: c.is_model_ready("loan"),
                lambda c: c.get_server_metadata(),
                lambda c: c.get_model_metadata("loan"),
            ):
                assert await ask(via) == await ask(direct)
            assert await via.is_model_ready("nosuchmodel") is False
            with pytest.raises(InferenceServerException) as via_error:
                await via.get_model_metadata("nosuchmodel")
            with pytest.raises(InferenceServerException) as direct_error:
                await direct.get_model_metadata("nosuchmodel")
            assert str(via_error.value) == str(direct_error.value)

            start, classes = 0, []
            for i, size in enumerate(sizes):
                part = subset(traffic, start, start + size)
                start += size
                outputs = [triton_http.InferRequestedOutput("predict", binary_data=True)]
                rid = {"x-request-id": f"req-{i}"}
                got = await via.infer(
                    "loan", triton_inputs(part), outputs=outputs, headers=dict(rid)
                )  # infer adds to the dict
                want = await direct.infer("loan", triton_inputs(part), outputs=outputs)
                assert got.as_numpy("predict").tolist() == want.as_numpy("predict").tolist()
                assert got.get_response()["outputs"] == want.get_response()["outputs"]
                # KServe answered in binary, as asked: the sidecar decoded the tail
                assert "binary_data_size" in got.get_response()["outputs"][0]["parameters"]
                classes += got.as_numpy("predict").tolist()
                assert (await as_json(part, f"req-{i}"))[0] == 200

            # Byte-level: the original bytes reach KServe and its answer comes back unchanged.
            body, headers = binary_body(subset(traffic, 0, 5), "raw")
            headers["x-request-id"] = "raw"
            direct_raw = await post_raw(http, f"{kserve_server.url}{infer}", body, headers)
            via_raw = await post_raw(http, f"{binary_sc.url}{infer}", body, headers)
            assert via_raw[0] == direct_raw[0] == 200
            assert via_raw[2] == direct_raw[2]
            assert via_raw[1].get(HEADER) == direct_raw[1].get(HEADER)
            status, json_answer = await as_json(subset(traffic, 0, 5), "raw")
            assert status == 200
            binary = triton_http.InferResult.from_response_body(
                via_raw[2], header_length=int(via_raw[1][HEADER.lower()])
            )
            (json_output,) = json.loads(json_answer)["outputs"]
            assert binary.as_numpy("predict").tolist() == json_output["data"]

            # A NaN in a numeric binary tensor is enforced exactly like a JSON NaN literal.
            bad = subset(traffic, 0, 3)
            bad["loan_amount"] = [1000.0, math.nan, 2000.0]
            body, headers = binary_body(bad, "bad")
            status, _, answer = await post_raw(
                http, f"{binary_sc.url}{infer}", body, {**headers, "x-request-id": "bad"}
            )
            assert status == 422, answer
            error = protocol_error(answer)
            assert error["details"][0]["row"] == 1
            assert error["details"][0]["feature"] == "loan_amount"
            assert error["details"][0]["kind"] == "non_finite"
            assert "row 1, feature 'loan_amount': non_finite" in error["message"]
            status, json_answer = await as_json(bad, "bad")
            assert status == 422
            assert protocol_error(json_answer) == error

            async with http.get(f"{binary_sc.url}/metrics") as r:
                binary_metrics = model_samples(binary_sc, await r.text())
            async with http.get(f"{json_sc.url}/metrics") as r:
                json_metrics = model_samples(json_sc, await r.text())
            binary_lines, json_lines = binary_sc.log_lines(), json_sc.log_lines()

            # tritonclient reads the error as Triton's string: its message names row, feature
            # and kind, and str() works as it does against the model server.
            with pytest.raises(InferenceServerException) as info:
                await via.infer("loan", triton_inputs(bad))
            assert info.value.status() == "422"
            assert info.value.message() == error["message"]
            assert str(info.value) == f"[422] {error['message']}"
        finally:
            await direct.close()
            await via.close()

    # Every monitoring sample (counters, bins, prediction statistics, violations) and every
    # log line equals what the same rows sent as JSON tensors produced.
    assert binary_metrics == json_metrics
    assert [comparable(line) for line in binary_lines] == [comparable(line) for line in json_lines]
    # ... and they are the right numbers.
    rows = sum(sizes) + 5 + 3
    assert binary_metrics[("infersight_rows_total", (("model", "loan"),))] == rows
    ok = {"model": "loan", "protocol": "v2"}
    assert metric(binary_sc, "infersight_requests_total", **ok, status="2xx") == len(sizes) + 1
    assert metric(binary_sc, "infersight_requests_total", **ok, status="4xx") == 2  # + tritonclient
    unknown = {"model": "loan", "feature": "marital_status", "kind": "unknown_category"}
    assert metric(binary_sc, "infersight_validation_violations_total", **unknown) == 2
    nan = {"model": "loan", "feature": "loan_amount", "kind": "non_finite"}
    assert metric(json_sc, "infersight_validation_violations_total", **nan) == 1
    raw_classes = binary.as_numpy("predict").tolist()
    for cls in (0, 1):
        labels = {"model": "loan", "output": "predict", "class": str(cls)}
        counted = metric(json_sc, "infersight_prediction_class_total", **labels)
        assert counted == (classes + raw_classes).count(cls)
    bins = sum(
        v for (name, lab), v in binary_metrics.items()
        if name == "infersight_feature_bin_total" and ("feature", "purpose") in lab
    )  # fmt: skip
    assert bins == rows
    assert [line["n_rows"] for line in binary_lines] == [*sizes, 5, 3]
    assert [line["status"] for line in binary_lines] == [200] * 5 + [422]
    assert binary_lines[1]["violations"] == {"unknown_category": {"marital_status": 1}}
    assert binary_lines[-1]["violations"] == {"non_finite": {"loan_amount": 1}}
    assert binary_lines[0]["predictions"] == {"n": 1, "classes": {str(classes[0]): 1}}


# --- a model server that answers with binary outputs -----------------------------------------


def frame_outputs(
    outputs: list[tuple[str, str, np.ndarray]], doc: dict[str, Any]
) -> tuple[bytes, int]:
    tensors, tail = [], b""
    for name, datatype, array in outputs:
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        tensors.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        tail += raw
    head = json.dumps({**doc, "outputs": tensors}).encode()
    return head + tail, len(head)


@asynccontextmanager
async def binary_model() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Predicts `age > 40`; answers binary when asked (`binary_data_output` or an output's
    `binary_data`), else JSON. Records every body it receives (inflated)."""
    received: list[bytes] = []

    async def infer(request: web.Request) -> web.StreamResponse:
        body = await request.read()  # aiohttp's server inflates compressed bodies
        received.append(body)
        length = int(request.headers.get(HEADER, len(body)))
        doc = json.loads(body[:length])
        tail, offset, ages = body[length:], 0, None
        for t in doc["inputs"]:
            size = t.get("parameters", {}).get("binary_data_size")
            if t["name"] == "age":
                ages = (
                    np.frombuffer(tail[offset : offset + size], "<i8")
                    if size is not None
                    else np.array(t["data"])
                )
            offset += size or 0
        assert ages is not None
        predict = (ages > 40).astype(np.int64)
        proba = np.stack([1.0 - predict, predict.astype(np.float64)], axis=1).astype(np.float32)
        wants_binary = doc.get("parameters", {}).get("binary_data_output", False) or any(
            o.get("parameters", {}).get("binary_data") for o in doc.get("outputs", [])
        )
        meta = {"model_name": "loan", "model_version": "7", "id": doc.get("id", "")}
        if not wants_binary:
            outputs = [
                {
                    "name": "proba",
                    "shape": [len(ages), 2],
                    "datatype": "FP32",
                    "data": proba.ravel().tolist(),
                },
                {
                    "name": "predict",
                    "shape": [len(ages)],
                    "datatype": "INT64",
                    "data": predict.tolist(),
                },
            ]
            return web.json_response({**meta, "outputs": outputs})
        answer, head = frame_outputs(
            [("proba", "FP32", proba), ("predict", "INT64", predict)], meta
        )
        return web.Response(
            body=answer, headers={HEADER: str(head), "content-type": "application/octet-stream"}
        )

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def sync_infer(url: str, cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Every output, in binary, through tritonclient.http's blocking client."""
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        result = client.infer("loan", triton_inputs(cols))
        return {name: result.as_numpy(name).tolist() for name in ("predict", "proba")}
    finally:
        client.close()


def age_profile() -> Profile:
    train = clean(generate(300, seed=43))
    return profile_from_predictions(train, [int(a > 40) for a in train["age"]], "predict")


async def test_binary_answers_are_monitored_like_json_answers() -> None:
    traffic = clean(generate(40, seed=44))
    sizes = [1, 7, 32]
    expected = [int(a > 40) for a in traffic["age"][: sum(sizes)]]
    profile = age_profile()
    async with binary_model() as (url, received):
        settings = Settings(upstream=UpstreamSettings(url=url, timeout_seconds=10))
        async with (
            run_sidecar(settings, {"loan": profile}) as binary_sc,
            run_sidecar(settings, {"loan": profile}) as json_sc,
            aiohttp.ClientSession() as http,
        ):
            client = triton_aio.InferenceServerClient(binary_sc.url.removeprefix("http://"))
            direct = triton_aio.InferenceServerClient(url.removeprefix("http://"))
            try:
                start, got = 0, []
                for i, size in enumerate(sizes):
                    part = subset(traffic, start, start + size)
                    start += size
                    rid = {"x-request-id": f"r{i}"}
                    # No outputs named: tritonclient asks for every output in binary.
                    result = await client.infer(
                        "loan", triton_inputs(part), headers=dict(rid)
                    )  # infer adds to the dict
                    reference = await direct.infer("loan", triton_inputs(part))
                    assert result.get_response() == reference.get_response()
                    assert "data" not in result.get_response()["outputs"][1]  # binary indeed
                    assert result.as_numpy("proba").tolist() == reference.as_numpy("proba").tolist()
                    got += result.as_numpy("predict").tolist()
                    status, _, _ = await post_raw(
                        http,
                        f"{json_sc.url}/v2/models/loan/infer",
                        v2_body(part, f"r{i}"),
                        {"content-type": "application/json", **rid},
                    )
                    assert status == 200
                async with http.get(f"{binary_sc.url}/metrics") as r:
                    binary_metrics = model_samples(binary_sc, await r.text())
                async with http.get(f"{json_sc.url}/metrics") as r:
                    json_metrics = model_samples(json_sc, await r.text())
                binary_lines, json_lines = binary_sc.log_lines(), json_sc.log_lines()

                # The answer's framing header is relayed, not dropped as hop-by-hop.
                body, headers = binary_body(subset(traffic, 0, 2), "raw")
                via_raw = await post_raw(
                    http, f"{binary_sc.url}/v2/models/loan/infer", body, headers
                )
                assert received[-1] == body  # forwarded unchanged
                direct_raw = await post_raw(http, f"{url}/v2/models/loan/infer", body, headers)
                assert via_raw[0] == direct_raw[0] == 200
                assert via_raw[2] == direct_raw[2]
                assert via_raw[1][HEADER] == direct_raw[1][HEADER]
                assert int(via_raw[1][HEADER]) < len(via_raw[2])

                # tritonclient's default (blocking) HTTP client, in a thread: same answers.
                part = subset(traffic, 0, 9)
                sync_via = await asyncio.to_thread(sync_infer, binary_sc.url, part)
                assert sync_via == await asyncio.to_thread(sync_infer, url, part)
                assert sync_via["predict"] == expected[:9]
            finally:
                await client.close()
                await direct.close()

    assert got == expected
    assert binary_metrics == json_metrics
    for cls in ("0", "1"):
        labels = {"model": "loan", "output": "predict", "class": cls}
        assert binary_metrics[
            ("infersight_prediction_class_total", tuple(sorted(labels.items())))
        ] == expected.count(int(cls))
    assert [comparable(line) for line in binary_lines] == [comparable(line) for line in json_lines]
    chunks = [expected[:1], expected[1:8], expected[8:40]]
    assert [line["predictions"]["n"] for line in binary_lines] == [len(c) for c in chunks]
    for line, chunk in zip(binary_lines, chunks, strict=True):
        assert sum(line["predictions"]["classes"].values()) == len(chunk)
        assert line["predictions"]["classes"].get("1", 0) == sum(chunk)
    assert binary_lines[0]["model_version"] == "7"


async def test_a_shadow_answering_in_binary_is_compared_row_by_row() -> None:
    """The shadow gets the same binary body and answers in binary too: its rows are decoded and
    compared with the primary's, none counted as an undecodable answer."""
    traffic = clean(generate(30, seed=45))
    sizes = [4, 10, 16]
    async with binary_model() as (primary, _), binary_model() as (shadow, shadow_received):
        settings = Settings(
            upstream=UpstreamSettings(url=primary, timeout_seconds=10),
            shadow=ShadowSettings(url=shadow, timeout_seconds=5),
        )
        async with run_sidecar(settings, {"loan": age_profile()}) as sc:
            client = triton_aio.InferenceServerClient(sc.url.removeprefix("http://"))
            try:
                start = 0
                for size in sizes:
                    await client.infer("loan", triton_inputs(subset(traffic, start, start + size)))
                    start += size
            finally:
                await client.close()
            for _ in range(100):  # the mirror works after the answer: wait for its comparisons
                agree = sc.sample(
                    "infersight_shadow_comparisons_total", {"model": "loan", "result": "agree"}
                )
                if agree == sum(sizes):
                    break
                await asyncio.sleep(0.05)
            ok = sc.sample("infersight_shadow_requests_total", {"model": "loan", "outcome": "ok"})
            errors = sc.sample("infersight_shadow_errors_total", {"model": "loan"})
    assert agree == sum(sizes)
    assert ok == len(sizes)
    assert errors == 0
    assert len(shadow_received) == len(sizes)
    assert all(b'"binary_data_size"' in body for body in shadow_received)  # binary tensors


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_compressed_binary_requests_are_inflated_then_decoded(algorithm: str) -> None:
    """tritonclient compresses the whole framed body (the header's length counts the inflated
    JSON): the sidecar inflates, then decodes and monitors, and the model server answers."""
    traffic = clean(generate(12, seed=46))
    expected = [int(a > 40) for a in traffic["age"]]
    async with binary_model() as (url, received):
        settings = Settings(upstream=UpstreamSettings(url=url, timeout_seconds=10))
        async with run_sidecar(settings, {"loan": age_profile()}) as sc:
            client = triton_aio.InferenceServerClient(sc.url.removeprefix("http://"))
            try:
                result = await client.infer(
                    "loan", triton_inputs(traffic), request_compression_algorithm=algorithm
                )
            finally:
                await client.close()
            lines = sc.log_lines()
            rows = sc.sample("infersight_rows_total", {"model": "loan"})
    assert result.as_numpy("predict").tolist() == expected
    assert b'"binary_data_size"' in received[0]  # the model server got the framed body
    assert rows == len(expected)
    (line,) = lines
    assert (line["status"], line["n_rows"]) == (200, len(expected))
    assert line["predictions"]["classes"].get("1", 0) == sum(expected)


# --- malformed binary bodies ------------------------------------------------------------------


def _malformed(body: bytes, length: int) -> list[tuple[str, bytes, str, str]]:
    """(case, body, header value, message fragment)."""
    head = json.loads(body[:length])
    sizes = [t["parameters"]["binary_data_size"] for t in head["inputs"]]
    age_doc = json.loads(body[:length])
    age_doc["inputs"][0]["parameters"]["binary_data_size"] = sizes[0] - 4
    wrong_size = json.dumps(age_doc).encode()
    bytes_at = length + sum(sizes[:2])  # marital_status, a BYTES tensor, starts here
    runs_past = bytearray(body)
    runs_past[bytes_at : bytes_at + 4] = (10_000).to_bytes(4, "little")
    return [
        ("truncated", body[:-7], str(length), "the binary data ends 7 bytes early"),
        ("trailing", body + b"\0" * 8, str(length), "8 bytes follow the last tensor"),
        ("header past body", body, str(len(body) + 100), f"exceeds the body ({len(body)} bytes)"),
        ("header not a number", body, "12a", "must be a byte count"),
        (
            "size vs shape",
            wrong_size + body[length:],
            str(len(wrong_size)),
            f"input 'age': binary_data_size {sizes[0] - 4} does not match shape [2] × INT64 (16 bytes)",  # noqa: RUF001
        ),
        (
            "bytes length",
            bytes(runs_past),
            str(length),
            "a BYTES element length runs past its tensor",
        ),
    ]


async def test_malformed_binary_bodies_get_400_and_are_not_forwarded() -> None:
    body, headers = binary_body(subset(clean(generate(2, seed=45)), 0, 2), "m")
    cases = _malformed(body, int(headers[HEADER]))
    async with binary_model() as (url, received):
        settings = Settings(upstream=UpstreamSettings(url=url, timeout_seconds=10))
        async with (
            run_sidecar(settings, {"loan": age_profile()}) as sc,
            aiohttp.ClientSession() as http,
        ):
            for case, raw, length, message in cases:
                status, _, answer = await post_raw(
                    http, f"{sc.url}/v2/models/loan/infer", raw, {**headers, HEADER: length}
                )
                assert status == 400, (case, answer)
                error = protocol_error(answer)
                assert error["type"] == "decode_error", case
                assert message in error["message"], (case, error["message"])
            # A well-formed binary body still goes through.
            status, _, _ = await post_raw(http, f"{sc.url}/v2/models/loan/infer", body, headers)
            assert status == 200
            lines = sc.log_lines()
    assert received == [body]  # none of the malformed bodies reached the model server
    assert metric(sc, "infersight_rejected_requests_total", model="loan", reason="decode") == len(
        cases
    )
    assert metric(
        sc, "infersight_requests_total", model="loan", protocol="v2", status="4xx"
    ) == len(cases)
    assert [line["status"] for line in lines] == [400] * len(cases) + [200]
    assert all(line["error"] == "decode_error" for line in lines[:-1])
