"""`infersight serve --grpc-port P --upstream-grpc HOST:PORT` as a real process: the flags win
over the environment, the gRPC server relays to the named upstream, and SIGTERM stops it with
status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from app.grpc.proto.open_inference_grpc_pb2 import ServerLiveRequest, ServerLiveResponse
from tests.support.sidecar_process import ROOT
from tests.support.stub_upstream import free_port

pytestmark = pytest.mark.integration

LIVE = "/inference.GRPCInferenceService/ServerLive"


def live_upstream(port: int) -> grpc.Server:
    """A real gRPC server on loopback answering ServerLive with live=true."""

    def live(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return bytes(ServerLiveResponse(live=True).SerializeToString())

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ServerLive": grpc.unary_unary_rpc_method_handler(live)}
    )
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def test_serve_flags_start_the_grpc_proxy_in_a_real_process(tmp_path: Path) -> None:
    upstream_port, http_port, grpc_port = free_port(), free_port(), free_port()
    upstream = live_upstream(upstream_port)
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
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            call = channel.unary_unary(LIVE)
            answer = call(ServerLiveRequest().SerializeToString(), timeout=10)
        assert ServerLiveResponse.FromString(answer).live is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        upstream.stop(None)
