"""The Open Inference Protocol over gRPC through the sidecar, with real peers on loopback.

MLServer serves the loan model over gRPC; tritonclient's gRPC client calls it directly and
through the sidecar. A small grpcio server in this file stands in for a model server where a
test needs one that echoes metadata, fails on purpose or answers slowly.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import grpc.aio
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from app.config import (
    DriftSettings,
    FeedbackSettings,
    GrpcSettings,
    Settings,
    ShadowSettings,
    UpstreamSettings,
)
from app.demo.data import FEATURES, generate
from app.grpc.proto import open_inference_grpc_pb2 as pb
from app.monitoring.profile import Profile
from tests.integration.servers.harness import RunningServer
from tests.integration.test_sidecar_real_servers import (
    V2_TYPES,
    profile_from_predictions,
    without_nulls,
)
from tests.support.sidecar import RunningSidecar, run_sidecar
from tests.support.stub_upstream import free_port

pytestmark = pytest.mark.integration

INFER = "/inference.GRPCInferenceService/ModelInfer"


def triton_inputs(cols: dict[str, list[Any]]) -> list[grpcclient.InferInput]:
    """One tensor per feature, as tritonclient sends them (raw_input_contents)."""
    n = len(cols["age"])
    out = []
    for f in FEATURES:
        datatype = V2_TYPES.get(f, "BYTES")
        if datatype == "BYTES":
            arr = np.array([str(v).encode() for v in cols[f]], dtype=np.object_)
        elif datatype == "BOOL":
            arr = np.array(cols[f], dtype=bool)
        elif datatype == "INT64":
            arr = np.array(cols[f], dtype=np.int64)
        else:
            arr = np.array(cols[f], dtype=np.float64)
        tensor = grpcclient.InferInput(f, [n], datatype)
        tensor.set_data_from_numpy(arr)
        out.append(tensor)
    return out


def subset(cols: dict[str, list[Any]], start: int, stop: int) -> dict[str, list[Any]]:
    return {k: v[start:stop] for k, v in cols.items()}


PD = {"content_type": "pd"}  # MLServer's pandas codec for a request of named columns


def infer(
    address: str, cols: dict[str, list[Any]], model: str = "loan", **kw: Any
) -> tuple[dict[str, Any], list[int]]:
    """The whole answer (as JSON) and the `predict` output's values."""
    client = grpcclient.InferenceServerClient(address)
    try:
        result = client.infer(model, triton_inputs(cols), parameters=PD, **kw)
        response: dict[str, Any] = result.get_response(as_json=True)
        return response, result.as_numpy("predict").ravel().tolist()
    finally:
        client.close()


def failure(fn: Callable[[], Any]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


@pytest.fixture(scope="module")
def grpc_profile(mlserver: RunningServer) -> Profile:
    """The loan profile with MLServer's own predictions on the training rows (over gRPC)."""
    assert mlserver.grpc_address is not None
    train = without_nulls(generate(400, seed=11))
    _, values = infer(mlserver.grpc_address, train)
    return profile_from_predictions(train, values, "predict")


def grpc_settings(upstream_grpc: str, http_url: str = "http://127.0.0.1:9", **kw: Any) -> Settings:
    return Settings(
        upstream=UpstreamSettings(url=http_url, timeout_seconds=kw.pop("timeout", 10)),
        grpc=GrpcSettings(port=free_port(), upstream=upstream_grpc),
        **kw,
    )


def grpc_address(sc: RunningSidecar) -> str:
    port = sc.app.state.infersight.settings.grpc.port
    return f"127.0.0.1:{port}"


def requests_total(sc: RunningSidecar, model: str, status: str, protocol: str = "v2-grpc") -> float:
    labels = {"model": model, "protocol": protocol, "status": status}
    return sc.sample("infersight_requests_total", labels) or 0.0


async def test_mlserver_through_the_sidecar_answers_like_direct(
    mlserver: RunningServer, grpc_profile: Profile
) -> None:
    assert mlserver.grpc_address is not None
    direct = mlserver.grpc_address
    settings = grpc_settings(direct, mlserver.url)
    traffic = without_nulls(generate(60, seed=12))
    async with run_sidecar(settings, {"loan": grpc_profile}) as sc:
        via = grpc_address(sc)

        def metadata_calls(address: str) -> list[Any]:
            client = grpcclient.InferenceServerClient(address)
            try:
                return [
                    client.is_server_live(),
                    client.is_server_ready(),
                    client.is_model_ready("loan"),
                    client.get_server_metadata(as_json=True),
                    client.get_model_metadata("loan", as_json=True),
                    str(failure(lambda: client.is_model_ready("nosuchmodel"))),
                    str(failure(lambda: client.get_model_metadata("nosuchmodel"))),
                ]
            finally:
                client.close()

        direct_meta = await asyncio.to_thread(metadata_calls, direct)
        via_meta = await asyncio.to_thread(metadata_calls, via)
        assert via_meta == direct_meta
        assert direct_meta[:3] == [True, True, True]
        assert direct_meta[4]["name"] == "loan"
        assert "nosuchmodel" in direct_meta[5]

        sizes = [1, 2, 5, 32, 20]
        sent = 0
        classes: dict[str, int] = {}
        for i, size in enumerate(sizes):
            part = subset(traffic, sent, sent + size)
            a = await asyncio.to_thread(infer, direct, part, request_id=f"d-{i}")
            b = await asyncio.to_thread(
                infer, via, part, request_id=f"d-{i}", headers={"x-request-id": f"req-{i}"}
            )
            assert b == a, "the answer through the sidecar differs from MLServer's"
            assert len(b[1]) == size
            for v in b[1]:
                classes[str(v)] = classes.get(str(v), 0) + 1
            sent += size

        # The model server's own errors pass through: an unknown model is NOT_FOUND-like.
        part = subset(traffic, 0, 2)
        err_direct = failure(lambda: infer(direct, part, model="nosuchmodel"))
        err_via = await asyncio.to_thread(failure, lambda: infer(via, part, model="nosuchmodel"))
        assert (err_via.status(), err_via.message()) == (err_direct.status(), err_direct.message())
        lines = sc.log_lines()

    assert requests_total(sc, "loan", "2xx") == len(sizes)
    assert requests_total(sc, "loan", "2xx", protocol="v2") == 0  # HTTP children untouched
    assert sc.sample("infersight_rows_total", {"model": "loan"}) == sent
    for cls, n in classes.items():
        labels = {"model": "loan", "output": "predict", "class": cls}
        assert sc.sample("infersight_prediction_class_total", labels) == n
    other_5xx_or_4xx = requests_total(sc, "__other__", "4xx") + requests_total(
        sc, "__other__", "5xx"
    )
    assert other_5xx_or_4xx == 1
    ok = {"model": "loan", "outcome": "ok"}
    assert sc.sample("infersight_upstream_duration_seconds_count", ok) == len(sizes)

    infer_lines = [line for line in lines if line["protocol"] == "v2-grpc"]
    assert len(infer_lines) == len(lines) == len(sizes) + 1  # metadata calls are not logged
    assert [line["request_id"] for line in lines[: len(sizes)]] == [
        f"req-{i}" for i in range(len(sizes))
    ]
    assert [line["n_rows"] for line in lines[: len(sizes)]] == sizes
    assert all(line["status"] == 200 and line["grpc_status"] == "OK" for line in lines[:-1])
    assert all(line["model_version"] == "v1" for line in lines[:-1])
    assert all(line["upstream_ms"] > 0 for line in lines)
    assert lines[-1]["model"] == "__other__"
    assert lines[-1]["grpc_status"] == err_via.status().removeprefix("StatusCode.")


async def test_enforced_violation_is_invalid_argument_and_not_forwarded(
    mlserver: RunningServer, grpc_profile: Profile
) -> None:
    assert mlserver.grpc_address is not None
    settings = grpc_settings(mlserver.grpc_address, mlserver.url)
    bad = subset(without_nulls(generate(10, seed=13)), 0, 3)
    bad["age"] = [30.0, float("nan"), 50.0]  # an FP64 tensor; the profile's age is finite
    async with run_sidecar(settings, {"loan": grpc_profile}) as sc:

        def call() -> InferenceServerException:
            client = grpcclient.InferenceServerClient(grpc_address(sc))
            try:
                inputs = triton_inputs({**bad, "age": [30, 0, 50]})
                age = grpcclient.InferInput("age", [3], "FP64")
                age.set_data_from_numpy(np.array(bad["age"], dtype=np.float64))
                inputs[0] = age
                return failure(lambda: client.infer("loan", inputs, parameters=PD))
            finally:
                client.close()

        err = await asyncio.to_thread(call)
        lines = sc.log_lines()
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "row 1" in err.message()
    assert "feature 'age'" in err.message()
    assert "non_finite" in err.message()
    assert requests_total(sc, "loan", "4xx") == 1
    assert (
        sc.sample("infersight_rejected_requests_total", {"model": "loan", "reason": "enforce"}) == 1
    )
    assert sc.sample("infersight_rejected_rows_total", {"model": "loan"}) == 3
    for outcome in ("ok", "error_status", "unavailable"):
        labels = {"model": "loan", "outcome": outcome}
        assert (sc.sample("infersight_upstream_duration_seconds_count", labels) or 0) == 0
    (line,) = lines
    assert line["rejected"] == "enforce"
    assert line["status"] == 400
    assert line["grpc_status"] == "INVALID_ARGUMENT"
    assert line["violations"] == {"non_finite": {"age": 1}}
    assert line["upstream_ms"] is None


async def test_malformed_messages_are_invalid_argument(
    mlserver: RunningServer, grpc_profile: Profile
) -> None:
    assert mlserver.grpc_address is not None
    settings = grpc_settings(mlserver.grpc_address, mlserver.url)
    short = pb.ModelInferRequest(model_name="loan")
    short.inputs.add(name="age", datatype="INT64", shape=[3])
    short.raw_input_contents.append(b"\x00" * 16)  # 3 INT64 values need 24 bytes
    two = pb.ModelInferRequest(model_name="loan")
    two.inputs.add(name="age", datatype="INT64", shape=[2])
    two.inputs.add(name="employment", datatype="BYTES", shape=[2])
    two.raw_input_contents.extend([b"\x00" * 16, b"\x03\x00\x00\x00abc\x09\x00\x00\x00xy"])
    cases = {
        b"\x0a\xff\x01garbage": "not a ModelInferRequest",
        short.SerializeToString(): "24 bytes",
        two.SerializeToString(): "claims 9 bytes",
    }
    async with run_sidecar(settings, {"loan": grpc_profile}) as sc:
        async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
            stub = channel.unary_unary(INFER)
            for body, needle in cases.items():
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub(body, timeout=5)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert needle in (info.value.details() or "")
        lines = sc.log_lines()
    assert [line["rejected"] for line in lines] == ["decode"] * 3
    assert [line["model"] for line in lines] == ["__other__", "loan", "loan"]
    assert requests_total(sc, "loan", "4xx") == 2
    assert (
        sc.sample("infersight_rejected_requests_total", {"model": "loan", "reason": "decode"}) == 2
    )


# --- a grpcio model server that misbehaves on request -------------------------------------


class StubUpstream:
    """ModelInfer answers by the `x-behave` metadata: `echo` (one FP64 output, every request
    metadata key echoed back as initial and trailing metadata), `notfound`, `slow`. A method
    of its own, `/custom.Echo/Chat`, streams each message back reversed."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def service(self, details: Any) -> Any:
        if details.method == INFER:
            return grpc.unary_unary_rpc_method_handler(self.infer)
        if details.method == "/custom.Echo/Chat":
            return grpc.stream_stream_rpc_method_handler(self.chat)
        return None

    async def infer(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.seen.append(md)
        msg = pb.ModelInferRequest.FromString(request)
        behave = md.get("x-behave", "echo")
        if behave == "notfound":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, "no such model here", (("x-why", "stub"),)
            )
        if behave == "slow":
            await asyncio.sleep(2)
        echoed = tuple((f"echo-{k}", v) for k, v in md.items() if k.startswith("x-"))
        await context.send_initial_metadata((*echoed, ("x-upstream-initial", "i")))
        context.set_trailing_metadata((("x-upstream-trailer", "t"),))
        n = msg.inputs[0].shape[0]
        out = pb.ModelInferResponse(model_name=msg.model_name, model_version="v7", id=msg.id)
        out.outputs.add(name="predict", datatype="FP64", shape=[n]).contents.fp64_contents.extend(
            [0.25] * n
        )
        return out.SerializeToString()

    async def chat(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message[::-1]


@asynccontextmanager
async def stub_upstream() -> AsyncIterator[tuple[str, StubUpstream]]:
    stub = StubUpstream()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((stub,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", stub
    finally:
        await server.stop(0)


def loan_request(n: int = 2, cols: dict[str, list[Any]] | None = None) -> bytes:
    """A ModelInferRequest of typed contents: `cols`, or `n` generated rows."""
    if cols is None:
        cols = without_nulls(generate(n, seed=5))
    n = len(cols["age"])
    msg = pb.ModelInferRequest(model_name="loan", id="abc")
    for f in FEATURES:
        datatype = V2_TYPES.get(f, "BYTES")
        t = msg.inputs.add(name=f, datatype=datatype, shape=[n])
        values = cols[f]
        if datatype == "BYTES":
            t.contents.bytes_contents.extend(str(v).encode() for v in values)
        elif datatype == "BOOL":
            t.contents.bool_contents.extend(values)
        elif datatype == "INT64":
            t.contents.int64_contents.extend(values)
        else:
            t.contents.fp64_contents.extend(values)
    return msg.SerializeToString()


async def test_metadata_status_and_deadline_pass_through(profile: Profile) -> None:
    async with stub_upstream() as (address, stub):
        settings = grpc_settings(address, timeout=0.5)
        async with run_sidecar(settings, {"loan": profile}) as sc:
            async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
                call = channel.unary_unary(INFER)(
                    loan_request(),
                    metadata=(("x-custom", "hello"), ("x-request-id", "rid-1")),
                    timeout=5,
                )
                answer = await call
                initial = dict(await call.initial_metadata())
                trailing = dict(await call.trailing_metadata())
                assert pb.ModelInferResponse.FromString(answer).model_version == "v7"
                assert stub.seen[-1]["x-custom"] == "hello"  # client → upstream
                assert stub.seen[-1]["x-request-id"] == "rid-1"
                assert initial["echo-x-custom"] == "hello"  # upstream → client
                assert initial["x-upstream-initial"] == "i"
                assert initial["x-request-id"] == "rid-1"
                assert trailing["x-upstream-trailer"] == "t"

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary(INFER)(
                        loan_request(), metadata=(("x-behave", "notfound"),), timeout=5
                    )
                assert info.value.code() is grpc.StatusCode.NOT_FOUND
                assert info.value.details() == "no such model here"
                assert dict(info.value.trailing_metadata())["x-why"] == "stub"
                generated_id = dict(info.value.initial_metadata())["x-request-id"]
                assert stub.seen[-1]["x-request-id"] == generated_id

                t0 = time.perf_counter()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary(INFER)(
                        loan_request(), metadata=(("x-behave", "slow"),), timeout=5
                    )
                assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                assert time.perf_counter() - t0 < 1.5  # upstream.timeout_seconds, not 2 s

                chat = channel.stream_stream("/custom.Echo/Chat")(timeout=5)
                for word in (b"abc", b"hello"):
                    await chat.write(word)
                await chat.done_writing()
                assert [m async for m in chat] == [b"cba", b"olleh"]
            lines = sc.log_lines()

    assert [line["grpc_status"] for line in lines] == ["OK", "NOT_FOUND", "DEADLINE_EXCEEDED"]
    assert [line["status"] for line in lines] == [200, 404, 504]
    assert [line["error"] for line in lines] == [None, None, "upstream_timeout"]
    assert lines[0]["model_version"] == "v7"
    assert lines[0]["request_id"] == "rid-1"
    assert lines[1]["request_id"] == generated_id
    assert requests_total(sc, "loan", "2xx") == 1
    assert requests_total(sc, "loan", "4xx") == 1
    assert requests_total(sc, "loan", "5xx") == 1
    for outcome, n in (("ok", 1), ("error_status", 1), ("timeout", 1)):
        labels = {"model": "loan", "outcome": outcome}
        assert sc.sample("infersight_upstream_duration_seconds_count", labels) == n
    hist = {"model": "loan", "output": "predict"}
    assert sc.sample("infersight_prediction_count", hist) == 2


async def test_upstream_down_is_unavailable_quickly(profile: Profile) -> None:
    settings = grpc_settings(f"127.0.0.1:{free_port()}")  # nothing listens there
    async with run_sidecar(settings, {"loan": profile}) as sc:
        async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
            for method, body in (
                (INFER, loan_request()),
                ("/inference.GRPCInferenceService/ServerLive", b""),
            ):
                t0 = time.perf_counter()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary(method)(body, timeout=10)
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE
                assert time.perf_counter() - t0 < 2
        lines = sc.log_lines()
    (line,) = lines
    assert line["error"] == "upstream_unavailable"
    assert line["status"] == 503
    assert requests_total(sc, "loan", "5xx") == 1
    labels = {"model": "loan", "outcome": "unavailable"}
    assert sc.sample("infersight_upstream_duration_seconds_count", labels) == 1
    assert sc.sample("infersight_rows_total", {"model": "loan"}) == 2  # checked, then failed


async def test_messages_over_the_limit_are_refused_counted_and_logged(profile: Profile) -> None:
    limit = 4096
    over = loan_request(70)  # a little over the limit: the handler sees, counts and logs it
    far_over = loan_request(200)  # past twice the limit: grpcio refuses it before the handler
    assert limit < len(over) <= 2 * limit < len(far_over)
    async with stub_upstream() as (address, stub):
        settings = grpc_settings(address)
        settings = settings.model_copy(
            update={
                "grpc": GrpcSettings(port=free_port(), upstream=address, max_message_bytes=limit)
            }
        )
        async with run_sidecar(settings, {"loan": profile}) as sc:
            async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
                stub_call = channel.unary_unary(INFER)
                for body, needle in ((over, "4096-byte limit"), (far_over, "larger than max")):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub_call(body, timeout=5)
                    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert needle in (info.value.details() or ""), info.value.details()
                assert await stub_call(loan_request(2), timeout=5)  # still serves
            lines = sc.log_lines()
    assert len(stub.seen) == 1  # neither oversized message was forwarded
    assert [(line["status"], line["rejected"]) for line in lines] == [
        (429, "too_large"),
        (200, None),
    ]
    assert lines[0]["grpc_status"] == "RESOURCE_EXHAUSTED"
    assert lines[0]["model"] == "loan"
    too_large = {"model": "loan", "reason": "too_large"}
    assert sc.sample("infersight_rejected_requests_total", too_large) == 1
    assert requests_total(sc, "loan", "4xx") == 1


async def test_model_infer_is_mirrored_to_a_grpc_shadow(profile: Profile) -> None:
    sizes = [1, 3, 5]
    async with stub_upstream() as (primary, first), stub_upstream() as (shadow, second):
        settings = grpc_settings(primary, shadow=ShadowSettings(grpc_address=shadow))
        async with run_sidecar(settings, {"loan": profile}) as sc:
            async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
                call = channel.unary_unary(INFER)
                for i, n in enumerate(sizes):
                    await call(loan_request(n), metadata=(("x-request-id", f"m-{i}"),), timeout=5)
            agree = {"model": "loan", "result": "agree"}
            for _ in range(100):  # mirrored after the answer: wait for the comparisons
                if sc.sample("infersight_shadow_comparisons_total", agree) == sum(sizes):
                    break
                await asyncio.sleep(0.05)
            assert sc.sample("infersight_shadow_comparisons_total", agree) == sum(sizes)
            ok = {"model": "loan", "outcome": "ok"}
            assert sc.sample("infersight_shadow_requests_total", ok) == len(sizes)
            assert sc.sample("infersight_shadow_errors_total", {"model": "loan"}) == 0
    # The shadow got each call with the primary's metadata, request id included.
    assert [md["x-request-id"] for md in second.seen] == [md["x-request-id"] for md in first.seen]
    assert [md["x-request-id"] for md in second.seen] == ["m-0", "m-1", "m-2"]


async def test_a_grpc_shadow_that_is_down_is_only_counted(profile: Profile) -> None:
    async with stub_upstream() as (primary, first):
        shadow = ShadowSettings(grpc_address=f"127.0.0.1:{free_port()}", timeout_seconds=2)
        settings = grpc_settings(primary, shadow=shadow)
        async with run_sidecar(settings, {"loan": profile}) as sc:
            async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
                answer = await channel.unary_unary(INFER)(loan_request(2), timeout=5)
            assert pb.ModelInferResponse.FromString(answer).model_version == "v7"
            down = {"model": "loan", "outcome": "unavailable"}
            for _ in range(100):
                if sc.sample("infersight_shadow_requests_total", down) == 1:
                    break
                await asyncio.sleep(0.05)
            assert sc.sample("infersight_shadow_requests_total", down) == 1
            assert sc.sample("infersight_shadow_errors_total", {"model": "loan"}) == 1
            assert requests_total(sc, "loan", "2xx") == 1
    assert len(first.seen) == 1


async def test_grpc_traffic_feeds_drift_windows_and_feedback(profile: Profile) -> None:
    """Drift and ground truth see gRPC calls as they see HTTP ones: a shifted feature drifts,
    and labels posted for the calls' request ids match their predictions."""
    cols = without_nulls(generate(1000, seed=77))
    cols["age"] = [a + 15 for a in cols["age"]]  # covariate shift on one feature
    async with stub_upstream() as (address, _):
        settings = grpc_settings(
            address,
            drift=DriftSettings(interval_seconds=3600, window_rows=2000, min_rows=300),
            feedback=FeedbackSettings(store="sqlite::memory:", min_rows=5, task="regression"),
        )
        async with (
            run_sidecar(settings, {"loan": profile}) as sc,
            aiohttp.ClientSession() as http,
        ):
            async with grpc.aio.insecure_channel(grpc_address(sc)) as channel:
                call = channel.unary_unary(INFER)
                for i in range(0, 1000, 100):
                    part = {k: v[i : i + 100] for k, v in cols.items()}
                    md = (("x-request-id", f"g-{i}"),)
                    await call(loan_request(cols=part), metadata=md, timeout=5)
            assert await sc.app.state.infersight.drift.run_cycle()
            async with http.get(f"{sc.url}/monitoring/drift") as r:
                report = await r.json()
            items = [{"request_id": "g-0", "row": r, "label": 0.75} for r in range(3)]
            items.append({"request_id": "g-900", "row": 99, "label": 0.25})
            async with http.post(f"{sc.url}/feedback", json={"feedback": items}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
    features = {f["feature"]: f for f in report["models"]["loan"]["features"]}
    assert features["age"]["drift"] is True
    assert features["employment"]["drift"] is False
    assert features["age"]["n_rows"] == 1000
    assert answer["outcomes"]["matched"] == 4
    assert sc.sample("infersight_feedback_total", {"model": "loan", "outcome": "matched"}) == 4
    # The stub predicts 0.25 for every row: three labels 0.5 above it, one equal.
    assert sc.sample("infersight_feedback_underestimate_total", {"model": "loan"}) == 1.5


async def test_latency_direct_and_through_the_sidecar(
    mlserver: RunningServer, grpc_profile: Profile
) -> None:
    assert mlserver.grpc_address is not None
    settings = grpc_settings(mlserver.grpc_address, mlserver.url)
    cols = subset(without_nulls(generate(10, seed=14)), 0, 4)
    async with run_sidecar(settings, {"loan": grpc_profile}) as sc:

        def timings(address: str, n: int = 200) -> tuple[list[float], list[Any]]:
            client = grpcclient.InferenceServerClient(address)
            inputs = triton_inputs(cols)
            out, answers = [], []
            try:
                for _ in range(n):
                    t0 = time.perf_counter()
                    result = client.infer("loan", inputs, parameters=PD)
                    out.append(time.perf_counter() - t0)
                    answers.append(result.as_numpy("predict").tolist())
            finally:
                client.close()
            return out, answers

        direct, a = await asyncio.to_thread(timings, mlserver.grpc_address)
        via, b = await asyncio.to_thread(timings, grpc_address(sc))
    assert a == b
    assert requests_total(sc, "loan", "2xx") == 200
    p50 = (statistics.median(direct) * 1000, statistics.median(via) * 1000)
    p99 = (np.percentile(direct, 99) * 1000, np.percentile(via, 99) * 1000)
    print(json.dumps({"direct_ms": [p50[0], p99[0]], "sidecar_ms": [p50[1], p99[1]]}))
    assert p50[1] < p50[0] + 20  # the sidecar adds milliseconds at most, not tens of them
