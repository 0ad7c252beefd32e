"""`infersight serve --grpc-port P --upstream-grpc HOST:PORT` as a real process: the flags win
over the environment, the gRPC server relays to the named upstream, SIGTERM lets the calls in
flight finish and stops it with status 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from app.grpc.proto.open_inference_grpc_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ServerLiveRequest,
    ServerLiveResponse,
)
from tests.support.sidecar_process import ROOT
from tests.support.stub_upstream import free_port

pytestmark = pytest.mark.integration

LIVE = "/inference.GRPCInferenceService/ServerLive"


INFER = "/inference.GRPCInferenceService/ModelInfer"
SLOW_SECONDS = 1.5


def slow_infer(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    """ModelInfer answered after SLOW_SECONDS."""
    time.sleep(SLOW_SECONDS)
    answer = ModelInferResponse(model_name="loan", id="slow")
    answer.outputs.add(name="predict", datatype="FP64", shape=[1]).contents.fp64_contents.append(1)
    return bytes(answer.SerializeToString())


def live_upstream(port: int) -> grpc.Server:
    """A real gRPC server on loopback: ServerLive answers live=true, ModelInfer slowly."""

    def live(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return bytes(ServerLiveResponse(live=True).SerializeToString())

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ServerLive": grpc.unary_unary_rpc_method_handler(live),
            "ModelInfer": grpc.unary_unary_rpc_method_handler(slow_infer),
        },
    )
    server = grpc.server(ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


@contextmanager
def sidecar_process(
    tmp_path: Path, upstream_port: int
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`infersight serve --grpc-port … --upstream-grpc …` as a process, once /healthz answers
    (with a wrong gRPC upstream in the environment: the flag must win); (process, gRPC port)."""
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INFERSIGHT_GRPC__UPSTREAM": "127.0.0.1:1",  # the flag must win over this
        "INFERSIGHT_FEEDBACK__ENABLED": "false",
    }
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--upstream", "http://127.0.0.1:9",
         "--port", str(http_port), "--grpc-port", str(grpc_port),
         "--upstream-grpc", f"127.0.0.1:{upstream_port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "sidecar.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the sidecar did not start"
                time.sleep(0.1)
        yield proc, grpc_port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_serve_flags_start_the_grpc_proxy_in_a_real_process(tmp_path: Path) -> None:
    upstream_port = free_port()
    upstream = live_upstream(upstream_port)
    try:
        with sidecar_process(tmp_path, upstream_port) as (proc, grpc_port):
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                call = channel.unary_unary(LIVE)
                answer = call(ServerLiveRequest().SerializeToString(), timeout=10)
            assert ServerLiveResponse.FromString(answer).live is True
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    finally:
        upstream.stop(None)


def test_sigterm_lets_grpc_calls_in_flight_finish(tmp_path: Path) -> None:
    """Calls already in flight when SIGTERM arrives get their answers; then the process exits 0."""
    upstream_port = free_port()
    upstream = live_upstream(upstream_port)
    request = ModelInferRequest(model_name="loan", id="slow")
    request.inputs.add(name="age", datatype="INT64", shape=[1]).contents.int64_contents.append(30)
    body = request.SerializeToString()
    try:
        with (
            sidecar_process(tmp_path, upstream_port) as (proc, grpc_port),
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            ThreadPoolExecutor(8) as pool,
        ):
            call = channel.unary_unary(INFER)
            futures = [pool.submit(call, body, timeout=20) for _ in range(8)]
            time.sleep(SLOW_SECONDS / 3)  # all eight are waiting for the model server
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            answers = [ModelInferResponse.FromString(f.result(timeout=20)) for f in futures]
            assert proc.wait(20) == 0
            took = time.monotonic() - t0
    finally:
        upstream.stop(None)
    assert [a.id for a in answers] == ["slow"] * 8
    assert took < SLOW_SECONDS + 5, took  # drained, not held to the 10 s grace period
    lines = [
        json.loads(line)
        for line in (tmp_path / "sidecar.log").read_text().splitlines()
        if '"protocol":"v2-grpc"' in line.replace(" ", "")
    ]
    assert [line["grpc_status"] for line in lines] == ["OK"] * 8  # each call logged once
