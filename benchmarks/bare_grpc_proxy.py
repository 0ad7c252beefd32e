"""The gRPC reference: a bare forwarder on grpc.aio (no decoding, no metrics, no logs).

Every unary call is relayed as bytes to the upstream channel with the client's metadata, and
the answer comes back with a request id in its initial metadata, as InferSight relays it: the
difference to InferSight is the monitoring alone.

    python -m benchmarks.bare_grpc_proxy --port 8092 --upstream 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import grpc.aio

_NOT_FORWARDED = frozenset({"user-agent", "content-type", "te"})


async def serve(port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(
        upstream,
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    stubs: dict[str, Any] = {}

    def handler(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method
        stub = stubs.get(method)
        if stub is None:
            stub = stubs[method] = channel.unary_unary(method)

        async def relay(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            metadata = [
                (k, v)
                for k, v in context.invocation_metadata() or ()
                if k not in _NOT_FORWARDED and not k.startswith(("grpc-", ":"))
            ]
            try:
                answer: bytes = await stub(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
            await context.send_initial_metadata((("x-request-id", "bare"),))
            return answer

        return grpc.unary_unary_rpc_method_handler(relay)

    class Generic(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
            return handler(details)

    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((Generic(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
