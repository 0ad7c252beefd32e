"""A gRPC load generator for `make bench`: `connections` calls of ModelInfer in flight at once
for `seconds`, on one channel per connection, with the request serialized once (the client's
cost per call is a send and a receive of bytes). Prints one JSON line: requests per second, p50
and p99 in milliseconds, errors, and every call made (warm-up included, for CPU per call).

    python -m benchmarks.grpc_load --target 127.0.0.1:8081 --rows 1 --connections 16 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
METHOD = "/inference.GRPCInferenceService/ModelInfer"
V2_TYPES = {"age": "INT64", "monthly_income": "FP64", "loan_amount": "FP64", "has_mortgage": "BOOL"}
CONTENTS = {"INT64": "int64_contents", "FP64": "fp64_contents", "BOOL": "bool_contents"}


def infer_request(rows: int, model: str = "loan") -> bytes:
    """A ModelInferRequest of `rows` demo rows, one typed tensor per feature (as tritonclient
    builds it, with MLServer's `content_type: pd`)."""
    sys.path.insert(0, str(ROOT))
    from app.demo.data import FEATURES, generate
    from app.grpc.proto import open_inference_grpc_pb2 as pb

    cols = generate(rows, seed=99)
    cols["monthly_income"] = [3000.0 if v is None else v for v in cols["monthly_income"]]
    request = pb.ModelInferRequest(model_name=model, id="bench")
    request.parameters["content_type"].string_param = "pd"
    for name in FEATURES:
        datatype = V2_TYPES.get(name, "BYTES")
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[rows])
        if datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in cols[name])
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(cols[name])
    return request.SerializeToString()


async def run(target: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    channels = [grpc.aio.insecure_channel(target) for _ in range(connections)]
    try:
        calls = [ch.unary_unary(METHOD) for ch in channels]
        for call in calls:  # connect and warm each channel before the clock starts
            await call(body, timeout=30)
        deadline = time.perf_counter() + seconds

        async def worker(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < deadline:
                try:
                    await call(body, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in calls))
        elapsed = time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()
    ordered = sorted(latencies) or [float("nan")]
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": errors,
        "calls": len(latencies) + errors + connections,  # every call served, warm-up included
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    body = infer_request(args.rows)
    print(json.dumps(asyncio.run(run(args.target, body, args.connections, args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
